"""The frame allocator: alignment, no double use, scratch rules, freed frames lose data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luod.hw.machine import Machine
from luod.kernel_model.errors import KernelError, OutOfMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.mm import (
    FIRMWARE_FRAMES,
    FrameAllocator,
    ScratchConfig,
    ScratchLayout,
    _FreeList,
)


def allocator(machine: Machine, *, scratch_only: bool = False) -> FrameAllocator:
    return FrameAllocator(
        machine.memory, ScratchLayout.place(machine.memory.frames), scratch_only=scratch_only
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10), st.integers(1, 5)), min_size=1, max_size=10))
def test_folios_aligned_disjoint_outside_scratch(requests: list[tuple[int, int]]) -> None:
    machine = Machine.create(1 << 30)  # sparse: room for every request drawn
    try:
        mm = allocator(machine)
        seen = Extents.empty()
        for order, count in requests:
            pfns = mm.alloc_folios(order, count)
            assert len(pfns) == count
            assert not (pfns % (1 << order)).any()
            got = Extents.from_blocks(pfns >> order, order)
            assert got.total() == count << order
            assert not (got & seen)
            assert not (got & mm.scratch_extents)
            assert int(pfns.min()) >= FIRMWARE_FRAMES
            seen = seen | got
    finally:
        machine.close()


def test_free_loses_data_and_double_free_refused(machine: Machine) -> None:
    mm = allocator(machine)
    pfn = mm.alloc_extent(3)
    machine.memory.write(pfn + 1, b"secret")
    before = mm.free_frames()
    mm.free_extent(pfn, 3)
    assert mm.free_frames() == before + 3
    assert machine.memory.read(pfn + 1)[:6] == b"\0" * 6
    with pytest.raises(KernelError, match="freed twice"):
        mm.free_extent(pfn, 1)


def test_scratch_only_mode_allocates_in_scratch(machine: Machine) -> None:
    mm = allocator(machine, scratch_only=True)
    pfn = mm.alloc_extent(8)
    assert mm.scratch_extents.covers(pfn, pfn + 8)
    mm.leave_scratch_only()
    pfn = mm.alloc_extent(8)
    assert not mm.scratch_extents.overlaps_ranges([pfn], [pfn + 8])[0]


def test_out_of_memory_takes_nothing(machine: Machine) -> None:
    mm = allocator(machine)
    before = mm.free_frames()
    with pytest.raises(OutOfMemory) as info:
        mm.alloc_folios(18, 1)  # a 1 GiB folio in 256 MiB of RAM
    assert info.value.errno_name == "ENOMEM"
    assert mm.free_frames() == before


def test_reserve_refuses_frames_in_use_or_scratch(machine: Machine) -> None:
    mm = allocator(machine)
    pfn = mm.alloc_extent(2)
    with pytest.raises(KernelError, match="not free"):
        mm.reserve(Extents.of(pfn, pfn + 2))
    lowmem = mm.scratch.regions[0]
    with pytest.raises(KernelError, match="scratch"):
        mm.reserve(Extents.of(lowmem.start, lowmem.start + 1))


def test_scratch_layout_configurable_and_round_trips() -> None:
    frames = (1 << 30) >> 12
    layout = ScratchLayout.place(frames, ScratchConfig(lowmem_bytes=8 << 20, global_bytes=64 << 20))
    assert [r.npages for r in layout.regions] == [2048, 16384]
    assert ScratchLayout.from_u64_array(layout.to_u64_array(), frames) == layout
    with pytest.raises(ValueError, match="aligned"):
        ScratchLayout.from_u64_array([4097, 4096], frames)
    with pytest.raises(ValueError, match="outside"):
        ScratchLayout.from_u64_array([0, 4096], frames)


def test_free_folios_vectorised(machine: Machine) -> None:
    mm = allocator(machine)
    before = mm.free_frames()
    pfns = mm.alloc_folios(0, 1000)
    machine.memory.write(int(pfns[500]), b"x")
    mm.free_folios(pfns, 0)
    assert mm.free_frames() == before
    assert machine.memory.read(int(pfns[500]))[:1] == b"\0"
    with pytest.raises(KernelError):
        mm.free_folios(np.array([pfns[0], pfns[0]]), 0)


def first_fit_reference(
    free: list[tuple[int, int]], order: int, count: int
) -> list[tuple[int, int]] | None:
    """Aligned blocks taken from the free ranges in address order, as many as each holds."""
    size, runs, need = 1 << order, [], count
    for s, e in free:
        start = (s + size - 1) & ~(size - 1)
        fit = max(e - start, 0) >> order
        if fit and need:
            runs.append((start, min(fit, need)))
            need -= runs[-1][1]
    return runs if not need else None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=30),
    st.integers(0, 3),
    st.integers(1, 60),
)
def test_free_list_plans_a_first_fit(
    gaps_and_lengths: list[tuple[int, int]], order: int, count: int
) -> None:
    free, at = [], 0
    for gap, length in gaps_and_lengths:  # disjoint, apart, in address order
        free.append((at + gap, at + gap + length))
        at += gap + length
    pool = _FreeList(Extents.from_ranges([s for s, _ in free], [e for _, e in free]))
    assert pool.plan_aligned(order, count) == first_fit_reference(free, order, count)
