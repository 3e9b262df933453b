"""Errors of the wire protocol, as values with stable names.

Owns every error the `luod.ipc` layer raises and the wire form of an error (`ErrorInfo`).
Two families, kept apart on purpose:

* `ProtocolError` and its two subclasses say that the *conversation* went wrong. The split
  follows h11: `LocalProtocolError` means we misused the API (sent a reply to a request
  that never came, a frame over the cap); `RemoteProtocolError` means the peer sent
  something the protocol forbids (garbage CBOR, a request before `hello`). A protocol error
  carries a stable qualified `name` (one of `ProtocolErrorName`), a symbolic `errno`, a
  human `message` and optionally the `object` it concerns, so it can be sent to the peer
  unchanged in an `error` envelope before the connection closes.
* `RemoteError` is the client-side view of an `error` reply: the daemon understood the
  request and refused it (`luod.SessionExists`, `EEXIST`, "session 'vm1' exists",
  object `vm1`). The connection stays usable.

A third, small family is what the clients raise when the *transport* fails, as subclasses
of the builtin `ConnectionError`/`TimeoutError` so generic handlers still catch them:
`DaemonUnreachable` (connect failed; `PermissionDenied` when the socket's permissions
refuse us), `ConnectionLost` (the daemon went away mid-conversation) and `DaemonTimeout`.

This module imports only the stdlib and attrs: the blocking client imports it on
`luoctl`'s start-up path.
"""

from __future__ import annotations

import enum
import errno as _errno
from typing import Final

import attrs

__all__ = [
    "DEFAULT_ERRNO",
    "ConnectionLost",
    "DaemonTimeout",
    "DaemonUnreachable",
    "ErrorInfo",
    "LocalProtocolError",
    "PermissionDenied",
    "ProtocolError",
    "ProtocolErrorName",
    "RemoteError",
    "RemoteProtocolError",
    "connect_error",
]


class ProtocolErrorName(enum.StrEnum):
    """The qualified names of protocol-level errors; stable, part of the wire contract."""

    FRAME_TOO_LARGE = "luod.FrameTooLarge"
    """A frame's declared length (or the receive buffer) exceeds the cap."""
    BAD_CBOR = "luod.BadCbor"
    """A frame is not exactly one well-formed CBOR item of the allowed subset."""
    BAD_MESSAGE = "luod.BadMessage"
    """An item is not a valid envelope, or not valid at this point of the conversation."""
    HELLO_REQUIRED = "luod.HelloRequired"
    """Something other than `hello` was sent before the hello exchange completed."""
    PROTOCOL_VERSION = "luod.ProtocolVersion"
    """The peer speaks a protocol version this side does not."""
    UNKNOWN_METHOD = "luod.UnknownMethod"
    """A request names a method the server does not have."""
    BAD_PARAMS = "luod.BadParams"
    """A request's `params` do not match the method's parameter class."""
    MISSING_FDS = "luod.MissingFds"
    """A message declares more file descriptors than arrived with it."""
    CONNECTION_CLOSED = "luod.ConnectionClosed"
    """The connection ended (mid-frame, or we tried to use it after it ended)."""


# The symbolic errno each protocol error carries on the wire. These are the closest Linux
# meanings, so a client that maps errnos to exit codes or messages needs no special case.
DEFAULT_ERRNO: Final[dict[ProtocolErrorName, str]] = {
    ProtocolErrorName.FRAME_TOO_LARGE: "EMSGSIZE",
    ProtocolErrorName.BAD_CBOR: "EPROTO",
    ProtocolErrorName.BAD_MESSAGE: "EPROTO",
    ProtocolErrorName.HELLO_REQUIRED: "EPROTO",
    ProtocolErrorName.PROTOCOL_VERSION: "EPROTONOSUPPORT",
    ProtocolErrorName.UNKNOWN_METHOD: "ENOSYS",
    ProtocolErrorName.BAD_PARAMS: "EINVAL",
    ProtocolErrorName.MISSING_FDS: "EBADF",
    ProtocolErrorName.CONNECTION_CLOSED: "ECONNRESET",
}


@attrs.frozen
class ErrorInfo:
    """The wire form of an error: the `error` field of an `error` envelope.

    Attributes:
        name: qualified, stable name (`luod.SessionExists`); clients dispatch on it.
        errno: symbolic errno (`"EEXIST"`) with the meaning Linux gives it, or None.
        message: one human sentence; never parsed by programs.
        object: the name of the object concerned (a session, a token, a method), or None.
    """

    name: str
    errno: str | None
    message: str
    object: str | None


class ProtocolError(Exception):
    """The conversation broke a rule of the protocol; see the subclasses for who did.

    The error is a value: `name`, `errno`, `message` and `object` are what goes on the wire
    (`info()`), and `str()` is the message. Do not raise this base class directly.
    """

    def __init__(
        self,
        name: ProtocolErrorName,
        message: str,
        *,
        object: str | None = None,
        errno: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name: ProtocolErrorName = name
        self.message = message
        self.object = object
        self.errno: str | None = DEFAULT_ERRNO[name] if errno is None else errno

    def info(self) -> ErrorInfo:
        """The wire form of this error."""
        return ErrorInfo(
            name=str(self.name), errno=self.errno, message=self.message, object=self.object
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.name)!r}, {self.message!r})"


class LocalProtocolError(ProtocolError):
    """We misused the protocol API: a bug on this side, not the peer's fault."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection is unusable and should be closed."""


class RemoteError(Exception):
    """The server answered a request with an `error` envelope.

    Attributes mirror `ErrorInfo`; `request_id` is the id of the failed request (None for
    a connection-level error such as `luod.ProtocolVersion`), `method` the method called
    when known. `str()` is one line that names the object, e.g.
    `session 'vm1' already exists [vm1] (luod.SessionExists, EEXIST)`.
    """

    def __init__(
        self, info: ErrorInfo, *, request_id: int | None = None, method: str | None = None
    ) -> None:
        self.info = info
        self.name = info.name
        self.errno = info.errno
        self.message = info.message
        self.object = info.object
        self.request_id = request_id
        self.method = method
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        # Messages come from the peer: fold any line breaks so logs and terminals get
        # exactly one line per error.
        message = " ".join(self.message.split()) or "(no message)"
        obj = f" [{self.object}]" if self.object is not None else ""
        detail = self.name if self.errno is None else f"{self.name}, {self.errno}"
        return f"{message}{obj} ({detail})"


# --- transport failures seen by clients ---------------------------------------------------


class DaemonUnreachable(ConnectionError):
    """Connecting to the daemon failed: no socket at the path, nothing listening
    (ECONNREFUSED), or another connect error. `errno` and `path` say which."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class PermissionDenied(DaemonUnreachable):
    """The daemon's socket exists but its permissions refuse us (EACCES/EPERM)."""


class ConnectionLost(ConnectionError):
    """The connection ended (EOF, reset) while the client still needed it."""


class DaemonTimeout(TimeoutError):
    """The daemon did not answer within the timeout. After a timeout while *sending* the
    connection is unusable; after a timeout while waiting, a late reply is dropped."""


def connect_error(exc: OSError, path: str) -> DaemonUnreachable:
    """The client-side error for a failed connect() to the daemon's socket at `path`."""
    code = exc.errno
    if code in (_errno.EACCES, _errno.EPERM):
        return PermissionDenied(
            f"permission denied connecting to the luod socket {path}", path=path, errno=code
        )
    if code == _errno.ENOENT:
        message = f"no luod socket at {path} (is luod running?)"
    elif code == _errno.ECONNREFUSED:
        message = f"nothing is listening on {path} (luod not running, or a stale socket)"
    else:
        message = f"cannot connect to the luod socket {path}: {exc.strerror or exc}"
    return DaemonUnreachable(message, path=path, errno=code)
