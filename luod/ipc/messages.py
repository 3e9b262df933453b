"""The envelopes of protocol version 1: the six message kinds, as frozen attrs classes.

Owns the shape of every message and the Python-side invariants of each field. The wire form
(a CBOR map with a `kind` key) is produced and checked by `luod.ipc.envelope` (by the rules
of `luod.ipc.convert`), the only place that turns these classes into maps and back.

Conversation (details in docs/protocol.md):

    client                          server
    hello {version, client}  --->
                             <---   welcome {version, server}   (or error, id null; close)
    request {id, method, ...} -->
                             <---   event {event, ts, data}     (any time after welcome)
                             <---   reply {id, result} | error {id, error}

File descriptors. `Request` and `Reply` may carry file descriptors passed with SCM_RIGHTS.
The wire field is `nfds` (how many travel with the frame); the fds themselves are the
local-only attribute `fds`, never encoded and not part of equality. A message you build to
send carries the fds to send (`nfds` defaults to `len(fds)`); a message returned by
`Connection.next_event` carries the fds that arrived with it, in order, and from then on the
caller owns them (must close them). A received message always has `len(fds) == nfds`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from luod.ipc.errors import ErrorInfo
from luod.ipc.limits import MAX_FDS_PER_MESSAGE, MAX_ID, PROTOCOL_VERSION, SUPPORTED_VERSIONS

__all__ = [
    "MAX_FDS_PER_MESSAGE",
    "MAX_ID",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "ErrorInfo",
    "ErrorReply",
    "Event",
    "Hello",
    "Message",
    "Reply",
    "Request",
    "Welcome",
]


def _check_id(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_ID:
        raise ValueError(f"{attribute.name} {value} is outside 0..{MAX_ID}")


def _check_version(_inst: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"protocol version must be >= 0, got {value}")


def _default_nfds(inst: Request | Reply) -> int:
    return len(inst.fds)


def _check_nfds(inst: Request | Reply, _attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_FDS_PER_MESSAGE:
        raise ValueError(f"nfds {value} is outside 0..{MAX_FDS_PER_MESSAGE}")
    # An empty `fds` with nfds > 0 is the transient state of a message just decoded from
    # the wire, before the connection attaches the fds that arrived with it.
    if inst.fds and len(inst.fds) != value:
        raise ValueError(f"nfds is {value} but {len(inst.fds)} fds are attached")


def _to_fd_tuple(fds: Any) -> tuple[int, ...]:
    return tuple(fds)


@attrs.frozen
class Hello:
    """Client → server, the first message: the protocol version and the client's name."""

    KIND: ClassVar[str] = "hello"
    version: int = attrs.field(validator=_check_version)
    client: str


@attrs.frozen
class Welcome:
    """Server → client, the answer to an acceptable `hello`."""

    KIND: ClassVar[str] = "welcome"
    version: int = attrs.field(validator=_check_version)
    server: str


@attrs.frozen
class Request:
    """Client → server: call `method` with `params`; answered by a `Reply` or `ErrorReply`
    with the same `id`. Ids are chosen by the client and unique among its requests in
    flight."""

    KIND: ClassVar[str] = "request"
    id: int = attrs.field(validator=_check_id)
    method: str
    params: dict[str, Any]
    fds: tuple[int, ...] = attrs.field(default=(), kw_only=True, eq=False, converter=_to_fd_tuple)
    nfds: int = attrs.field(
        default=attrs.Factory(_default_nfds, takes_self=True), kw_only=True, validator=_check_nfds
    )


@attrs.frozen
class Reply:
    """Server → client: the successful result of request `id`, any data-model value."""

    KIND: ClassVar[str] = "reply"
    id: int = attrs.field(validator=_check_id)
    result: Any
    fds: tuple[int, ...] = attrs.field(default=(), kw_only=True, eq=False, converter=_to_fd_tuple)
    nfds: int = attrs.field(
        default=attrs.Factory(_default_nfds, takes_self=True), kw_only=True, validator=_check_nfds
    )


@attrs.frozen
class ErrorReply:
    """Server → client: request `id` failed. `id` is None for a connection-level error
    (bad hello, protocol violation), after which the server closes the connection."""

    KIND: ClassVar[str] = "error"
    id: int | None = attrs.field(validator=_check_id)
    error: ErrorInfo


@attrs.frozen
class Event:
    """Server → client, unsolicited: `event` happened at `ts` (seconds since the Unix
    epoch, a float), with event-specific `data`."""

    KIND: ClassVar[str] = "event"
    event: str
    ts: float
    data: dict[str, Any]


Message = Hello | Welcome | Request | Reply | ErrorReply | Event
"""Any envelope."""

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.KIND: cls for cls in (Hello, Welcome, Request, Reply, ErrorReply, Event)
}
"""Envelope class by wire `kind`."""
