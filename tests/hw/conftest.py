"""Fixtures for hw tests: small sparse machines and a frame allocator for page tables.

The kernel's frame allocator lives in kernel_model, which hw tests must not need: `Frames`
is a minimal stand-in that hands out table frames from a region and tracks what is live,
so tests can compare the builder's bookkeeping with what it really allocated.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.machine import Machine

RAM = 1 << 30
BDF = "0000:01:00.0"
OTHER_BDF = "0000:02:00.0"


class Frames:
    """Bump allocator over [start, end) with reuse of freed frames."""

    def __init__(self, start: int, end: int) -> None:
        self._next = start
        self._end = end
        self._free: list[int] = []
        self.live: set[int] = set()
        self.allocations = 0

    def alloc(self) -> int:
        if self._free:
            pfn = self._free.pop()
        else:
            if self._next >= self._end:
                raise MemoryError("out of table frames")
            pfn = self._next
            self._next += 1
        self.live.add(pfn)
        self.allocations += 1
        return pfn

    def free(self, pfn: int) -> None:
        assert pfn in self.live, f"double free of {pfn:#x}"
        self.live.remove(pfn)
        self._free.append(pfn)


def table_region(machine: Machine) -> tuple[int, int]:
    """The last 16 MiB of RAM hold page tables; data frames come from below."""
    end = machine.memory.frames
    return end - 4096, end


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(RAM, [BDF, OTHER_BDF])
    yield m
    m.close()


@pytest.fixture
def frames(machine: Machine) -> Frames:
    return Frames(*table_region(machine))


@pytest.fixture
def builder(machine: Machine, frames: Frames) -> PageTableBuilder:
    return PageTableBuilder(machine.memory, frames.alloc, frames.free)
