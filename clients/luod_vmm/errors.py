"""The one error type `luod-vmm`'s commands raise, and the exit status of any failure.

Owned here so that every command reports failures the same way: one line on stderr and an
exit status from `luod.cli.exitcodes.ExitCode`, the enum `luoctl` uses too, so a script
treats both tools alike. luod-vmm exits 0 (run: the kexec happened or SIGTERM closed the
session; resume: verified), 1, 2, 69, 77 or 130.
"""

from __future__ import annotations

from luod.cli.exitcodes import ExitCode
from luod.ipc.errors import DaemonUnreachable, PermissionDenied, RemoteError

__all__ = ["VmmError", "exit_code_for", "refused"]


class VmmError(Exception):
    """A failure to report as one line on stderr; `code` is the exit status."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


def refused(what: str, exc: RemoteError) -> VmmError:
    """The daemon refused `what` (a method and its object): one line naming both."""
    code = ExitCode.NOPERM if exc.errno in ("EPERM", "EACCES") else ExitCode.FAILED
    return VmmError(f"{what}: {exc}", code)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for an exception that ends a command."""
    if isinstance(exc, VmmError):
        return exc.code
    if isinstance(exc, PermissionDenied):
        return ExitCode.NOPERM
    if isinstance(exc, DaemonUnreachable):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, RemoteError) and exc.errno in ("EPERM", "EACCES"):
        return ExitCode.NOPERM
    return ExitCode.FAILED
