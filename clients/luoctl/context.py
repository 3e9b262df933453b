"""What a command receives and what it returns.

A command is a function `(Context, argparse.Namespace) -> Outcome`: it talks to the daemon
through `ctx.link` and returns the result document; `main` prints it (JSON or human,
through the command's renderer) and exits with `outcome.code`. Commands that stream (events)
or write bytes to stdout (memfd retrieve) print themselves and return `silent=True`.
"""

from __future__ import annotations

from typing import Any

import attrs

from luoctl.link import DaemonLink
from luoctl.output import Output
from luod.cli.exitcodes import ExitCode

__all__ = ["Context", "Outcome"]


@attrs.frozen
class Context:
    """The daemon connection and the output of one run."""

    link: DaemonLink
    out: Output


@attrs.frozen
class Outcome:
    """A command's result: the JSON `document`, the exit code, and whether the command
    already printed everything itself (`silent`)."""

    document: Any = None
    code: ExitCode = ExitCode.OK
    silent: bool = False
