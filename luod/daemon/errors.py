"""Errors the daemon answers with, and the one mapping of any error to its wire form.

`wire_error` is the one mapping of an exception to what a client sees (`error_json` is
the same as a map, for records and events); nothing else builds error wire forms.
Every error a client sees has a qualified name (`luod.<Name>`), a symbolic errno or None,
a message naming the object and the cause, and the object's name. Kernel-model errors
keep their class name and errno; daemon policy errors are `DaemonError`s.
"""

from __future__ import annotations

import errno as _errno

from luod.errnos import errno_name
from luod.ipc.errors import ErrorInfo, RemoteProtocolError
from luod.ipc.messages import ErrorReply
from luod.kernel_model.errors import KernelError
from luod.kernel_model.images import ImageError


class DaemonError(Exception):
    def __init__(
        self, name: str, message: str, *, errno: int | None = None, obj: str | None = None
    ) -> None:
        super().__init__(message)
        self.name = f"luod.{name}"
        self.message = message
        self.errno = errno
        self.obj = obj

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)


def not_owner(what: str, owner: int, uid: int) -> DaemonError:
    return DaemonError(
        "NotOwner",
        f"{what} belongs to uid {owner}, not to uid {uid}",
        errno=_errno.EPERM,
        obj=what,
    )


def incompatible(message: str, target: str) -> DaemonError:
    return DaemonError("Incompatible", message, errno=_errno.ENOEXEC, obj=target)


INTERNAL_ERROR = "luod.InternalError"
"""The wire name of luod's own faults (a bug, never the caller's input): the only errors
logged with a traceback."""


def wire_error(exc: BaseException) -> ErrorInfo:
    """The wire form of any error a request (or an update) can end with: the one mapping.

    Protocol errors already carry their wire form; daemon and kernel-model errors keep
    their name (qualified `luod.<Name>`), errno and object; a bad image file is
    `luod.BadImage`; anything else is a bug, answered as `luod.InternalError` (EIO)."""
    if isinstance(exc, RemoteProtocolError):
        return exc.info()
    if isinstance(exc, DaemonError):
        return ErrorInfo(name=exc.name, errno=exc.errno_name, message=exc.message, object=exc.obj)
    if isinstance(exc, KernelError):
        return ErrorInfo(
            name=f"luod.{exc.name}", errno=exc.errno_name, message=exc.message, object=exc.obj
        )
    if isinstance(exc, ImageError):
        return ErrorInfo(name="luod.BadImage", errno="EINVAL", message=str(exc), object=None)
    return ErrorInfo(
        name=INTERNAL_ERROR,
        errno="EIO",
        message=f"{type(exc).__name__}: {exc}",
        object=None,
    )


def error_json(exc: BaseException) -> dict[str, str | None]:
    """`wire_error` as a plain map, for records and events: {name, errno, message, object}."""
    info = wire_error(exc)
    return {"name": info.name, "errno": info.errno, "message": info.message, "object": info.object}


def error_reply(request_id: int | None, exc: BaseException) -> ErrorReply:
    """The `error` envelope answering request `request_id` with `exc`."""
    return ErrorReply(id=request_id, error=wire_error(exc))
