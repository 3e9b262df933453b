"""Live progress for the long commands (`update`, `kexec`): phases on a terminal.

Owns the choice of when to show progress (stderr is a terminal and no `--json`: progress
is for people, and CLI.md keeps stderr silent on success otherwise) and how: subscribe to
events on the same connection before the call, then render each event as it arrives while
the call waits (through `DaemonLink.set_event_tap`). If the daemon cannot subscribe, the
command runs without progress: it is a nicety, never a reason to fail.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from luoctl.context import Context
from luoctl.output import Output, stderr_is_terminal
from luod.ipc.errors import RemoteError
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import Event

__all__ = ["PhaseProgress", "call_with_progress", "describe"]


def describe(event: Event) -> str:
    """`update.phase phase=freeze ms=3.2`: the event name, then its scalar data."""
    parts = [event.event]
    for key, value in event.data.items():
        if isinstance(value, str | int | float | bool) or value is None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


class PhaseProgress:
    """Renders events on stderr with the time since the command started."""

    def __init__(self, out: Output) -> None:
        self._out = out
        self._start = time.monotonic()

    def __call__(self, event: Event) -> None:
        elapsed = time.monotonic() - self._start
        self._out.progress(f"luoctl: [{elapsed:6.2f}s] {describe(event)}")


def call_with_progress(ctx: Context, method: str, params: Mapping[str, object]) -> Any:
    """Call a long method (no reply timeout: the daemon's phase deadlines rule) and return
    its result, showing progress when a person is watching."""
    if not ctx.out.json and stderr_is_terminal():
        try:
            subscribed = ctx.link.call("events.subscribe")
        except RemoteError:
            pass  # an older daemon without events: just wait for the reply
        else:
            close_fds(subscribed.fds)
            ctx.link.set_event_tap(PhaseProgress(ctx.out))
    reply = ctx.link.call(method, params, wait_forever=True)
    close_fds(reply.fds)
    return reply.result
