"""The exit statuses of `luod-vmm` and the one error type its commands raise.

Owned here so that every command reports failures the same way: one line on stderr and an
exit status from `ExitCode`. The numbers are those of `luoctl` (CLI.md, "Exit codes"), so a
script treats both tools alike; they are repeated rather than imported because the two
clients do not depend on each other.
"""

from __future__ import annotations

import enum

from luod.ipc.errors import DaemonUnreachable, PermissionDenied, RemoteError

__all__ = ["ExitCode", "VmmError", "exit_code_for", "refused"]


class ExitCode(enum.IntEnum):
    """How a `luod-vmm` run ended."""

    OK = 0
    """run: the kexec happened (or SIGTERM closed the session); resume: verified."""
    FAILED = 1
    """The daemon refused a request, the connection failed, or verification failed."""
    USAGE = 2
    """Bad command line."""
    UNAVAILABLE = 69
    """The daemon cannot be reached."""
    NOPERM = 77
    """The caller's credentials do not allow it."""


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
