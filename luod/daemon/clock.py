"""The devices' clock: emulated device time follows real time, lazily inside a blackout.

Devices run on their own clock (hw): they write only when the machine is advanced. The
daemon advances it by the real time elapsed, from a background task every few
milliseconds while a DMA engine runs (and whenever a request looks at the devices), so DMA
really lands in proportion to the time that passed. With no engine running the task wakes
rarely (`IDLE_TICK_SECONDS`, or at once on `wake`): a tick would change nothing, and 200
timer wake-ups a second are a real share of the request path's CPU.

Inside an update's blackout the emulation must not burn the daemon's CPU: real DMA engines
run beside the CPU, not on it. So the orchestrator `defer`s the clock at freeze: ticks
then cost nothing and the devices' time simply accrues. It is applied in one step (a step
is exact however time is split: see luod.hw.dma) at the one point inside the blackout
where what the devices write could change, just before userspace dies and the next kernel
releases memory (`catch_up`), and once more when the blackout is over (`resume`), up to the
instant it ended, so `dma_writes_during_blackout` counts exactly the records due in it.
The blackout is measured up to that instant too: the catch-up is the emulation's cost, not
the guest's, so it is not in `blackout_ms`. It does delay the first request the daemon
reads after the kexec (about 0.6 ms per ms of blackout with 4 devices at 100k records/s
on a 2-core machine), and the full blackout, which waits for the participants, includes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from luod.hw.machine import Machine

TICK_SECONDS = 0.005
IDLE_TICK_SECONDS = 0.05


class DeviceClock:
    def __init__(self, machine: Machine, now_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        self.machine = machine
        self._now_ns = now_ns
        self._last = now_ns()
        self.deferred = False
        self._wake = trio.Event()

    def wake(self) -> None:
        """An engine may have started: tick at the running pace from now on."""
        self._wake.set()

    def now_ns(self) -> int:
        return self._now_ns()

    def _advance_to(self, now: int) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._last = now
            self.machine.advance(elapsed)

    def tick(self) -> None:
        """Bring the devices up to now; while deferred, a no-op (the time accrues)."""
        if not self.deferred:
            self._advance_to(self._now_ns())

    def defer(self) -> None:
        """Bring the devices up to now, then let their time accrue until `resume`."""
        self._advance_to(self._now_ns())
        self.deferred = True

    def catch_up(self) -> None:
        """Apply the accrued time now (a point where device state or memory changes)."""
        self._advance_to(self._now_ns())

    def resume(self, until_ns: int | None = None) -> None:
        """Apply the accrued time up to `until_ns` (default now); ticks advance again."""
        self._advance_to(self._now_ns() if until_ns is None else until_ns)
        self.deferred = False
        self.wake()  # the next kernel may have restored running engines

    def writes(self) -> dict[str, int]:
        return {d.bdf: d.dma.writes for d in self.machine.pci}

    def writes_since(self, before: dict[str, int]) -> dict[str, int]:
        """DMA writes of each device with a DMA window since `before` (from `writes`)."""
        return {
            d.bdf: d.dma.writes - before.get(d.bdf, d.dma.writes)
            for d in self.machine.pci
            if d.dma.window is not None
        }

    async def run(self) -> None:
        while True:
            if any(device.dma.running for device in self.machine.pci):
                await trio.sleep(TICK_SECONDS)
            else:
                with trio.move_on_after(IDLE_TICK_SECONDS):
                    await self._wake.wait()
                self._wake = trio.Event()
            self.tick()
