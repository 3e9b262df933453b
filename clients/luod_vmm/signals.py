"""Running a piece of async work until it ends or SIGTERM/SIGINT arrives.

Owned here so the VMM's lifecycle code stays linear: `until_signal` returns what the work
returned, or the signal that interrupted it (the work is cancelled), and re-raises the
work's own exception unwrapped (not inside an ExceptionGroup).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["Interrupted", "until_signal"]

T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@attrs.frozen
class Interrupted:
    """The work was cancelled by this signal."""

    signum: int

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@attrs.define
class _Box(Generic[T]):
    value: T | None = None
    done: bool = False
    error: Exception | None = None
    signum: int | None = None


async def until_signal(work: Callable[[], Awaitable[T]]) -> T | Interrupted:
    box: _Box[T] = _Box()
    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                try:
                    box.value = await work()
                    box.done = True
                except Exception as exc:
                    box.error = exc
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                async for signum in signals:
                    box.signum = signum
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(run)
            nursery.start_soon(watch)
    if box.error is not None:
        raise box.error
    if box.done:
        return box.value  # type: ignore[return-value]  # T may itself be None
    assert box.signum is not None
    return Interrupted(box.signum)
