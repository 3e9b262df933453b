"""The emulated kernel's errors: one errno table, one exception family.

Every failure of the model is a `KernelError` carrying an errno with the meaning Linux gives
it for the same operation, a message that names the object concerned, and the object's name.
Subclasses name the cause (`FrameInScratch`, `SessionExists`, ...); the class name is the
error's stable name on the wire (`luod.<ClassName>`).
"""

from __future__ import annotations

import errno as _errno
from typing import ClassVar

from luod.errnos import errno_name

# The errnos the model returns, with the meaning the kernel gives them in live update.
ERRNO_MEANINGS: dict[int, str] = {
    _errno.EPERM: "not permitted on this object (frozen memfd mapping, foreign owner)",
    _errno.ENOENT: "no such session, token, handler or subtree",
    _errno.EIO: "the LUO device cannot deserialize what the previous kernel handed over",
    _errno.EBADF: "not an open file",
    _errno.ENOMEM: "out of memory or out of session slots (6.19 limits)",
    _errno.EBUSY: "in use or in the wrong phase (already preserved, mutation after freeze)",
    _errno.EEXIST: "name or token already used",
    _errno.EINVAL: "invalid argument or state transition",
    _errno.ENOSPC: "no room for another file in the session (6.19 limits)",
    _errno.E2BIG: "request too large",
    _errno.ENODATA: "no incoming data for this object",
    _errno.EOPNOTSUPP: "not supported by this kernel",
    _errno.EAGAIN: "try again (serialization failed inside reboot)",
    _errno.EADDRINUSE: "HWPT token already used",
    _errno.ENOEXEC: "the target kernel cannot read a format that would be handed to it",
    _errno.ENOTTY: "ioctl number in range but wrongly encoded",
}


class KernelError(Exception):
    """An operation of the emulated kernel failed; `errno` says how, as Linux would."""

    default_errno: ClassVar[int] = _errno.EINVAL

    def __init__(self, message: str, *, errno: int | None = None, obj: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = self.default_errno if errno is None else errno
        self.obj = obj
        if self.errno not in ERRNO_MEANINGS:
            raise ValueError(f"errno {self.errno} is not in the model's errno table")

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return f"{self.message} ({self.errno_name})"


# --- KHO -------------------------------------------------------------------------------


class FrameInScratch(KernelError):
    """A scratch frame can never be preserved: the next kernel boots from scratch."""


class AlreadyPreserved(KernelError):
    default_errno = _errno.EEXIST


class NotPreserved(KernelError):
    default_errno = _errno.ENOENT


class BadAlignment(KernelError):
    pass


class KhoFinalized(KernelError):
    """KHO state is frozen between finalize and abort (or the kexec)."""

    default_errno = _errno.EBUSY


class SubtreeExists(KernelError):
    default_errno = _errno.EEXIST


class NoSuchSubtree(KernelError):
    default_errno = _errno.ENOENT


class RootBlobFull(KernelError):
    """The KHO root FDT is limited to one page."""

    default_errno = _errno.ENOMEM


class RestoreRefused(KernelError):
    """Restore of memory that was never preserved, restored twice, or at another order."""


class OutOfMemory(KernelError):
    default_errno = _errno.ENOMEM


class KernelDead(KernelError):
    """This kernel instance has kexec'd or panicked; nothing of it may be used."""

    default_errno = _errno.EIO


class KernelPanicked(KernelError):
    """The emulated kernel panicked (for example on an unreadable LUO root)."""

    default_errno = _errno.EIO


# --- LUO ---------------------------------------------------------------------------------


class LuoDisabled(KernelError):
    """No /dev/liveupdate: LUO or KHO is off in this kernel."""

    default_errno = _errno.ENOENT


class DeviceBusy(KernelError):
    """/dev/liveupdate is exclusive."""

    default_errno = _errno.EBUSY


class LuoUnavailable(KernelError):
    """The incoming data could not be deserialized; every open fails with EIO."""

    default_errno = _errno.EIO


class WrongState(KernelError):
    """A global event not allowed in the current LUO state."""


class UpdateInProgress(KernelError):
    """A mutation while an update is prepared or frozen."""

    default_errno = _errno.EBUSY


class BadSessionName(KernelError):
    pass


class SessionExists(KernelError):
    default_errno = _errno.EEXIST


class NoSuchSession(KernelError):
    default_errno = _errno.ENOENT


class SessionAlreadyRetrieved(KernelError):
    pass


class TooManySessions(KernelError):
    default_errno = _errno.ENOMEM


class SessionFull(KernelError):
    default_errno = _errno.ENOSPC


class TokenExists(KernelError):
    default_errno = _errno.EEXIST


class NoSuchToken(KernelError):
    default_errno = _errno.ENOENT


class FileAlreadyPreserved(KernelError):
    """The same object is preserved already, in this or another session."""

    default_errno = _errno.EBUSY


class NoHandler(KernelError):
    """No file handler can preserve this kind of file."""

    default_errno = _errno.ENOENT


class FinishVetoed(KernelError):
    default_errno = _errno.EBUSY


class NoImageLoaded(KernelError):
    pass


class FormatUnavailable(KernelError):
    """No format both this kernel can write and the target can read."""

    default_errno = _errno.ENOEXEC


class HandlerRegistration(KernelError):
    pass


class NoIncomingData(KernelError):
    default_errno = _errno.ENODATA


class MappingFrozen(KernelError):
    default_errno = _errno.EPERM
