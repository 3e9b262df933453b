"""The devices' clock is lazy inside a blackout: deferred time costs no emulation, yet when
it is applied exactly the records due in it have landed, each verified in the ring."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trio.testing

from luod.daemon.clock import IDLE_TICK_SECONDS, TICK_SECONDS, DeviceClock
from luod.hw.dma import DmaEngine
from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.machine import Machine
from tests.hw.conftest import BDF, OTHER_BDF, RAM, Frames, table_region
from tests.hw.dma import start_dma

RATE = 100_000  # records/s per device, luod-vmm's default
MS = 1_000_000


class FakeTime:
    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(RAM, [BDF, OTHER_BDF])
    yield m
    m.close()


def engines(machine: Machine) -> list[DmaEngine]:
    frames = Frames(*table_region(machine))
    builder = PageTableBuilder(machine.memory, frames.alloc, frames.free)
    # 16 pages = 1024 slots per ring: more than any step below, so every record stays
    _, first = start_dma(machine, builder, BDF, pages=16, rate_hz=RATE)
    _, second = start_dma(machine, builder, OTHER_BDF, pages=16, rate_hz=RATE, data_pfn=0x3000)
    return [first, second]


def test_deferred_time_lands_exactly_once_applied(machine: Machine) -> None:
    now = FakeTime()
    clock = DeviceClock(machine, now)
    running = engines(machine)
    now.ns += 2 * MS
    clock.defer()  # brings the devices up to now first
    assert [e.issued for e in running] == [200, 200]

    for _ in range(7):  # 7 ms inside the blackout: ticks do no device work
        now.ns += MS
        clock.tick()
    assert [e.issued for e in running] == [200, 200]
    assert all(e.verify().ok and e.verify().intact == 200 for e in running)

    clock.resume(until_ns=now.ns - MS // 2)  # the blackout ended 0.5 ms ago
    assert [e.issued for e in running] == [850, 850]  # 2 + 6.5 ms at 100 records/ms
    assert [e.writes for e in running] == [850, 850]
    checks = [e.verify() for e in running]
    assert all(c.ok and c.intact == 850 for c in checks)

    clock.tick()  # no longer deferred: the last 0.5 ms follows
    assert [e.issued for e in running] == [900, 900]


def test_catch_up_applies_deferred_time_and_stays_deferred(machine: Machine) -> None:
    now = FakeTime()
    clock = DeviceClock(machine, now)
    running = engines(machine)
    clock.defer()
    now.ns += 3 * MS
    clock.catch_up()
    assert [e.issued for e in running] == [300, 300]
    now.ns += 4 * MS
    clock.tick()
    assert clock.deferred and [e.issued for e in running] == [300, 300]
    clock.resume()
    assert [e.issued for e in running] == [700, 700]
    assert all(e.verify().ok for e in running)


async def test_the_clock_task_ticks_fast_only_while_an_engine_runs(
    machine: Machine, autojump_clock: object
) -> None:
    clock = DeviceClock(machine, FakeTime())
    ticks: list[float] = []
    clock.tick = lambda: ticks.append(trio.current_time())  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        await trio.sleep(1.0)  # idle: no engine, so a tick would change nothing
        assert len(ticks) == pytest.approx(1.0 / IDLE_TICK_SECONDS, abs=1)
        running = engines(machine)
        ticks.clear()
        clock.wake()  # what device.dma does after starting an engine
        await trio.testing.wait_all_tasks_blocked()  # before any time passes
        assert len(ticks) == 1  # at once, not at the next idle tick
        await trio.sleep(0.1)
        assert len(ticks) == pytest.approx(1 + 0.1 / TICK_SECONDS, abs=1)
        for engine in running:
            engine.stop()
        await trio.sleep(0.01)  # the tick that finds no engine running
        ticks.clear()
        await trio.sleep(0.5)
        assert len(ticks) == pytest.approx(0.5 / IDLE_TICK_SECONDS, abs=1)
        nursery.cancel_scope.cancel()
