"""Every way a `luoctl` run can fail, reduced to one `Failure`: exit code plus error value.

Owns the mapping from exceptions (the daemon's `RemoteError`, the transport errors of the
blocking client, our own `CliError`s) to CLI.md's exit codes and to the error document
`{"error": {"name", "errno", "message", "object"}}`. It is the one place that decides, for
example, that `luod.Incompatible` is exit 3 only for the commands that stage or check a
target, so `output` and `main` never look at exception types.

Errors raised on the client side get names in the `luoctl.` namespace (the daemon's are
`luod.`), so a script can tell "the daemon said no" from "luoctl could not ask".
"""

from __future__ import annotations

from typing import Final

import attrs

from luod.cli.exitcodes import ExitCode
from luod.errnos import errno_name
from luod.ipc.errors import (
    ConnectionLost,
    DaemonTimeout,
    DaemonUnreachable,
    PermissionDenied,
    ProtocolError,
    RemoteError,
)

__all__ = [
    "CONNECTION_LOST",
    "DAEMON_UNREACHABLE",
    "INCOMPATIBLE",
    "INCOMPATIBLE_COMMANDS",
    "INTERRUPTED",
    "LOCAL_ERROR",
    "NOT_OWNER",
    "NOT_PERMITTED",
    "PERMISSION_DENIED",
    "TIMEOUT",
    "USAGE",
    "CliError",
    "Failure",
    "UsageError",
    "classify",
    "interrupted",
    "os_errno_name",
]

# Client-side error names (stable: scripts may dispatch on them like on the daemon's).
USAGE: Final = "luoctl.Usage"
DAEMON_UNREACHABLE: Final = "luoctl.DaemonUnreachable"
PERMISSION_DENIED: Final = "luoctl.PermissionDenied"
TIMEOUT: Final = "luoctl.Timeout"
CONNECTION_LOST: Final = "luoctl.ConnectionLost"
LOCAL_ERROR: Final = "luoctl.LocalError"
"""A local file could not be opened, read or written (`--from`, `--output`)."""
INTERRUPTED: Final = "luoctl.Interrupted"

# Daemon error names with their own exit codes.
INCOMPATIBLE: Final = "luod.Incompatible"
NOT_OWNER: Final = "luod.NotOwner"
NOT_PERMITTED: Final = "luod.NotPermitted"
"""A machine-wide request (CLI.md "Who may call what") from a uid that is not an admin."""

NOT_SERVED: Final = frozenset({"luod.TooManyConnections", "luod.HelloTimeout"})
"""luod closed the connection before serving it (a connection cap, the hello deadline):
the daemon cannot be reached for now, exit 69."""
INCOMPATIBLE_COMMANDS: Final = frozenset({"check", "update", "kexec", "load"})
"""Commands for which `luod.Incompatible` means exit 3 (CLI.md: "nothing was changed")."""


def os_errno_name(code: int | None) -> str | None:
    """The symbolic name of an OSError's errno (which may be None)."""
    return None if code is None else errno_name(code)


@attrs.frozen
class Failure:
    """The end of a failed run: the exit code and the error as CLI.md prints it."""

    code: ExitCode
    name: str
    errno: str | None
    message: str
    obj: str | None = None
    """The object concerned (`object` in the document)."""

    def document(self) -> dict[str, object]:
        """The `--json` error document."""
        return {
            "error": {
                "name": self.name,
                "errno": self.errno,
                "message": self.message,
                "object": self.obj,
            }
        }

    def line(self) -> str:
        """The one stderr line without `--json`: `luoctl: <message> (<errno>)`."""
        # Messages may come from the daemon: fold line breaks so it stays one line.
        message = " ".join(self.message.split()) or "(no message)"
        if self.obj and self.obj not in message:
            message = f"{message} [{self.obj}]"
        return f"luoctl: {message}" + (f" ({self.errno})" if self.errno else "")


class CliError(Exception):
    """An error `luoctl` itself detected; carries its exit code and error value."""

    def __init__(
        self,
        message: str,
        *,
        code: ExitCode = ExitCode.FAILED,
        name: str = LOCAL_ERROR,
        errno: str | None = None,
        object: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = Failure(code=code, name=name, errno=errno, message=message, obj=object)


class UsageError(CliError):
    """A bad command line (exit 2). `usage` is the short usage of the (sub)command the
    error concerns, printed before the message without `--json`, as argparse does."""

    def __init__(self, message: str, *, usage: str | None = None, prog: str = "luoctl") -> None:
        super().__init__(message, code=ExitCode.USAGE, name=USAGE, errno="EINVAL")
        self.usage = usage
        self.prog = prog


def _remote(exc: RemoteError, command: str | None) -> Failure:
    code = ExitCode.FAILED
    if exc.name == INCOMPATIBLE and command in INCOMPATIBLE_COMMANDS:
        code = ExitCode.INCOMPATIBLE
    elif exc.name in NOT_SERVED:
        code = ExitCode.UNAVAILABLE
    elif exc.name in (NOT_OWNER, NOT_PERMITTED):
        # Another uid's session, or an admin request from a plain uid: the daemon says
        # EPERM; a credentials problem, exit 77.
        code = ExitCode.NOPERM
    return Failure(code, exc.name, exc.errno, exc.message, exc.object)


def classify(exc: BaseException, command: str | None) -> Failure | None:
    """The failure `exc` means for `command` (a command key such as `"session.create"`),
    or None when it is not an error `luoctl` reports (a bug: let it propagate)."""
    if isinstance(exc, CliError):
        return exc.failure
    if isinstance(exc, RemoteError):
        return _remote(exc, command)
    if isinstance(exc, PermissionDenied):
        return Failure(
            ExitCode.NOPERM, PERMISSION_DENIED, os_errno_name(exc.errno), str(exc), exc.path
        )
    if isinstance(exc, DaemonUnreachable):
        return Failure(
            ExitCode.UNAVAILABLE, DAEMON_UNREACHABLE, os_errno_name(exc.errno), str(exc), exc.path
        )
    # The link turns timeouts and lost connections into CliErrors with the method named;
    # these two are the fallback should one escape it.
    if isinstance(exc, DaemonTimeout):
        return Failure(ExitCode.FAILED, TIMEOUT, "ETIMEDOUT", str(exc))
    if isinstance(exc, ConnectionLost):
        return Failure(ExitCode.FAILED, CONNECTION_LOST, "ECONNRESET", str(exc))
    if isinstance(exc, ProtocolError):
        return Failure(ExitCode.FAILED, str(exc.name), exc.errno, exc.message, exc.object)
    if isinstance(exc, OSError):
        filename = None if exc.filename is None else str(exc.filename)
        message = exc.strerror or str(exc)
        if filename is not None:
            message = f"{filename}: {message}"
        return Failure(ExitCode.FAILED, LOCAL_ERROR, os_errno_name(exc.errno), message, filename)
    return None


def interrupted(command: str) -> Failure:
    """SIGINT while `command` ran (exit 130). The daemon is not told: a request it already
    received runs to its end, so the message points at `status`."""
    return Failure(
        ExitCode.INTERRUPTED,
        INTERRUPTED,
        "EINTR",
        f"interrupted during {command}; see `luoctl status` for what luod did",
        command,
    )
