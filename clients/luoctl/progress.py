"""Live progress for the long commands: update phases, and bytes copied, on a terminal.

Owns the choice of when to show progress (`watching`: stdout and stderr are terminals and
no `--json`: progress is for a person, and CLI.md keeps stderr silent on success otherwise)
and how. For `update` and `kexec`: subscribe to events on the same connection before the
call, then render each event as it arrives while the call waits (through
`DaemonLink.set_event_tap`), including who the update waits for. If the daemon cannot
subscribe, the command runs without progress: it is a nicety, never a reason to fail. For
copies (`memfd preserve --from`, from the daemon's `memfd.progress` events, and `memfd
retrieve --output`): `ByteProgress`, one line rewritten in place.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from luoctl.context import Context
from luoctl.human import human_bytes
from luoctl.output import Output, stderr_is_terminal, stdout_is_terminal
from luod.ipc.errors import RemoteError
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import Event

__all__ = ["ByteProgress", "PhaseProgress", "call_with_progress", "describe", "watching"]


def watching(ctx: Context) -> bool:
    """Is a person watching this run? Progress goes only to them."""
    return not ctx.out.json and stdout_is_terminal() and stderr_is_terminal()


def describe(event: Event) -> str:
    """`update.phase phase=freeze ms=3.2`: the event name, then its scalar data (lists of
    scalars comma-joined: `participants=vmm1,vmm2`)."""
    parts = [event.event]
    for key, value in event.data.items():
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            parts.append(f"{key}={','.join(map(str, value)) or '-'}")
        elif isinstance(value, str | int | float | bool) or value is None:
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
    if watching(ctx):
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


class ByteProgress:
    """`luoctl: copied 1.5G of 4G (37%)`, rewritten in place at most every `interval`
    seconds, and once more, complete, at `done`."""

    def __init__(self, out: Output, what: str, total: int, interval: float = 0.25) -> None:
        self._out = out
        self._what = what
        self._total = total
        self._interval = interval
        self._shown = 0.0

    def __call__(self, copied: int) -> None:
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            self._out.progress_inline(self._line(copied))

    def done(self, copied: int) -> None:
        self._out.progress(self._line(copied))

    def _line(self, copied: int) -> str:
        share = f" ({copied * 100 // self._total}%)" if self._total else ""
        return f"luoctl: {self._what} {human_bytes(copied)} of {human_bytes(self._total)}{share}"
