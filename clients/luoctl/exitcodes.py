"""The exit statuses of `luoctl`: one IntEnum, the public contract of CLI.md ("Exit codes").

Scripts branch on these numbers, so they are defined once, here, and never change. The two
high ones are the sysexits.h values for the same meanings (`EX_UNAVAILABLE`, `EX_NOPERM`),
so they read familiarly to anyone who knows `os.EX_*`.
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """How a `luoctl` run ended."""

    OK = 0
    """Success."""
    FAILED = 1
    """The daemon refused the request or the operation failed."""
    USAGE = 2
    """Bad command line: unknown command or option, bad token, size, seal or --fd."""
    INCOMPATIBLE = 3
    """The target kernel is incompatible (check, update, kexec, load); nothing changed."""
    UNAVAILABLE = 69
    """The daemon cannot be reached (no socket, nothing listening, no answer to hello)."""
    NOPERM = 77
    """The caller's credentials do not allow it (socket permissions, another uid's session)."""
    INTERRUPTED = 130
    """Interrupted by SIGINT (the shell's 128 + 2); not in CLI.md's table, which covers
    runs that were allowed to finish."""
