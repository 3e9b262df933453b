"""The exit statuses of luod's clients: one IntEnum, the public contract of docs/cli.md.

Scripts branch on these numbers, so they are defined once, here, for `luoctl`, `luod-vmm`
and `luod-run`, and never change. The high ones are the sysexits.h values for the same
meanings (`EX_UNAVAILABLE`, `EX_SOFTWARE`, `EX_NOPERM`), so they read familiarly to anyone
who knows `os.EX_*`. Each client uses the subset that applies to it (docs/cli.md says
which).
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """How a client run ended."""

    OK = 0
    """Success."""
    FAILED = 1
    """The daemon refused the request or the operation failed (luod-vmm: or verification)."""
    USAGE = 2
    """Bad command line: unknown command or option, bad token, size, seal or --fd."""
    INCOMPATIBLE = 3
    """The target kernel is incompatible (check, update, kexec, load); nothing changed."""
    UNAVAILABLE = 69
    """The daemon cannot be reached (no socket, nothing listening, no answer to hello)."""
    SOFTWARE = 70
    """luod-run: the interposer cannot be built or loaded."""
    NOPERM = 77
    """The caller's credentials do not allow it (socket permissions, another uid's session)."""
    INTERRUPTED = 130
    """Interrupted by SIGINT (the shell's 128 + 2); not in CLI.md's table, which covers
    runs that were allowed to finish."""
