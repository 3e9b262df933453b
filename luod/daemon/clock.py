"""The devices' clock: emulated device time follows real time.

Devices run on their own clock (hw): they write only when the machine is advanced. The
daemon advances it by the real time elapsed, from a background task every few
milliseconds and explicitly between the steps of an update (after freeze, after the kexec,
after restore), so DMA really lands during the blackout, in proportion to its length.
"""

from __future__ import annotations

import time

import trio

from luod.hw.machine import Machine

TICK_SECONDS = 0.005


class DeviceClock:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._last = time.perf_counter_ns()

    def tick(self) -> None:
        now = time.perf_counter_ns()
        elapsed, self._last = now - self._last, now
        if elapsed > 0:
            self.machine.advance(elapsed)

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
            await trio.sleep(TICK_SECONDS)
            self.tick()
