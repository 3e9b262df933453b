"""The IOMMU page-table format, builder and walker: round trips, faults, huge leaves."""

from __future__ import annotations

import bisect
import itertools
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.iommu import FaultReason, IommuFault, Segment, parse_bdf
from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.hw.pagetable import (
    IOVA_LIMIT,
    PTE_LEAF,
    PTE_PRESENT,
    PTE_WRITE,
    SIZE_1G,
    SIZE_2M,
    SIZE_4K,
    MappingError,
    leaves,
    table_pages,
)
from tests.hw.conftest import BDF, OTHER_BDF, Frames, table_region

BIG_RAM = 8 << 30  # sparse: room for 1 GiB leaves, costs only what is written
PAGES_2M = SIZE_2M >> PAGE_SHIFT
PAGES_1G = SIZE_1G >> PAGE_SHIFT

Run = tuple[int, int]  # (pfn, npages)


# -- oracles --------------------------------------------------------------------------------------


def greedy_leaves(iova: int, runs: list[Run], max_page: int) -> list[tuple[int, int, int]]:
    """(iova, pfn, size) of the largest leaf that fits, chosen page by page."""
    sizes = [s for s in (SIZE_1G, SIZE_2M, SIZE_4K) if s <= max_page]
    out: list[tuple[int, int, int]] = []
    cur = iova
    for pfn, npages in runs:
        phys, left = pfn << PAGE_SHIFT, npages << PAGE_SHIFT
        while left:
            size = next(s for s in sizes if not cur % s and not phys % s and left >= s)
            out.append((cur, phys >> PAGE_SHIFT, size))
            cur, phys, left = cur + size, phys + size, left - size
    return out


class Mapping:
    """IOVA -> phys according to the runs, independently of the tables."""

    def __init__(self, iova: int, runs: list[Run]) -> None:
        self.starts: list[int] = []
        self.runs = runs
        cur = iova
        for _pfn, npages in runs:
            self.starts.append(cur)
            cur += npages << PAGE_SHIFT
        self.end = cur

    def phys(self, iova: int) -> int | None:
        i = bisect.bisect_right(self.starts, iova) - 1
        if i < 0 or iova >= self.end:
            return None
        return (self.runs[i][0] << PAGE_SHIFT) + iova - self.starts[i]

    def segments(self, iova: int, length: int) -> list[Segment]:
        pieces: list[tuple[int, int]] = []
        for start, (pfn, npages) in zip(self.starts, self.runs, strict=True):
            lo, hi = max(iova, start), min(iova + length, start + (npages << PAGE_SHIFT))
            if lo >= hi:
                continue
            phys = (pfn << PAGE_SHIFT) + lo - start
            if pieces and pieces[-1][0] + pieces[-1][1] == phys:
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + hi - lo)
            else:
                pieces.append((phys, hi - lo))
        return [Segment(p >> PAGE_SHIFT, p & (PAGE_SIZE - 1), n) for p, n in pieces]


# -- strategies -----------------------------------------------------------------------------------


@st.composite
def mappings(draw: st.DrawFn) -> tuple[int, list[Run], int]:
    """A base IOVA, runs of frames and a max page size. Big runs are congruent with their
    IOVA modulo 2M or 1G so they can use huge leaves (and stay cheap to check)."""
    base = draw(st.integers(0, 3)) * SIZE_1G + draw(
        st.sampled_from([0, SIZE_2M, 5 * SIZE_2M + 3 * SIZE_4K, 17 * SIZE_4K])
    )
    max_page = draw(st.sampled_from([SIZE_4K, SIZE_2M, SIZE_1G, SIZE_1G]))
    # 1G-congruent runs only where 1G leaves are allowed: elsewhere they would be 2^18
    # small leaves, slow for the page-by-page oracle and no new coverage.
    kinds = ["4k", "2m", "1g", "1g"] if max_page == SIZE_1G else ["4k", "2m"]
    runs: list[Run] = []
    cur = base >> PAGE_SHIFT
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        if kind == "4k":
            pfn = draw(st.integers(0, 1 << 20))
            npages = draw(st.integers(1, 600))
        elif kind == "2m":
            pfn = draw(st.integers(0, 2000)) * PAGES_2M + cur % PAGES_2M
            npages = draw(st.integers(0, 3)) * PAGES_2M + draw(st.sampled_from([0, 1, 7, 300]))
            npages = max(npages, 1)
        else:
            pfn = draw(st.integers(0, 4)) * PAGES_1G + cur % PAGES_1G
            # Long enough to hold one aligned 1 GiB leaf wherever the run starts.
            npages = PAGES_1G + (-cur % PAGES_1G)
            npages += draw(st.sampled_from([0, 5, PAGES_2M, 2 * PAGES_2M + 3]))
        runs.append((pfn, npages))
        cur += npages
    return base, runs, max_page


def big_machine() -> tuple[Machine, Frames, PageTableBuilder]:
    machine = Machine.create(BIG_RAM, [BDF])
    frames = Frames(*table_region(machine))
    return machine, frames, PageTableBuilder(machine.memory, frames.alloc, frames.free)


# -- round trips ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=mappings(), data=st.data())
def test_map_translate_round_trip(mapping: tuple[int, list[Run], int], data: st.DataObject) -> None:
    base, runs, max_page = mapping
    machine, frames, builder = big_machine()
    try:
        root = builder.create_root()
        mapped = builder.map(root, base, runs, max_page=max_page)
        oracle = Mapping(base, runs)
        assert mapped == oracle.end - base
        machine.iommu.attach(BDF, root)

        # The leaves are exactly the greedy largest-fit choice.
        got = leaves(machine.memory, root)
        expected = greedy_leaves(base, runs, max_page)
        assert list(zip(got.iova.tolist(), got.pfn.tolist(), got.size.tolist(), strict=True)) == (
            expected
        )
        assert got.write.all()

        # Whole range and random sub-ranges translate as the runs say.
        whole = machine.iommu.translate(BDF, base, mapped, True)
        assert whole == oracle.segments(base, mapped)
        for _ in range(5):
            lo = data.draw(st.integers(base, oracle.end - 1))
            length = data.draw(st.integers(1, oracle.end - lo))
            assert machine.iommu.translate(BDF, lo, length, False) == oracle.segments(lo, length)

        # The vectorised walk agrees, inside and outside the mapping.
        pages = np.array(
            data.draw(st.lists(st.integers((base >> 12) - 3, (oracle.end >> 12) + 3), min_size=1)),
            dtype=np.int64,
        )
        result = machine.iommu.translate_pages(BDF, pages, True)
        for page, pfn, fault in zip(
            pages.tolist(), result.pfns.tolist(), result.faults.tolist(), strict=True
        ):
            phys = oracle.phys(page << PAGE_SHIFT)
            if page < 0:
                assert (pfn, fault) == (-1, FaultReason.OUT_OF_RANGE)
            elif phys is None:
                assert (pfn, fault) == (-1, FaultReason.NOT_PRESENT)
            else:
                assert (pfn, fault) == (phys >> PAGE_SHIFT, 0)

        # Table pages are exactly the frames the builder holds.
        assert set(table_pages(machine.memory, root).tolist()) == frames.live

        # Unmapping everything frees every table but the root.
        assert builder.unmap(root, base, mapped) == mapped
        assert frames.live == {root}
        assert table_pages(machine.memory, root).tolist() == [root]
        with pytest.raises(IommuFault):
            machine.iommu.translate(BDF, base, 1, False)
        builder.destroy(root)
        assert not frames.live
    finally:
        machine.close()


@settings(max_examples=25, deadline=None)
@given(
    npages=st.integers(1, 2000),
    cuts=st.lists(st.integers(0, 2000), max_size=4),
)
def test_partial_unmap_keeps_the_rest(npages: int, cuts: list[int]) -> None:
    machine, frames, builder = big_machine()
    try:
        base = 7 * SIZE_2M
        root = builder.create_root()
        builder.map(root, base, [(0x40000, npages)], max_page=SIZE_4K)
        points = sorted({min(c, npages) for c in cuts} | {0, npages})
        removed: set[int] = set()
        for i, (lo, hi) in enumerate(itertools.pairwise(points)):
            if i % 2 == 0:
                got = builder.unmap(root, base + (lo << 12), (hi - lo) << 12)
                assert got == (hi - lo) << 12
                removed.update(range(lo, hi))
        machine.iommu.attach(BDF, root)
        pages = np.arange(npages, dtype=np.int64) + (base >> 12)
        result = machine.iommu.translate_pages(BDF, pages, False)
        for i, (pfn, fault) in enumerate(
            zip(result.pfns.tolist(), result.faults.tolist(), strict=True)
        ):
            if i in removed:
                assert fault == FaultReason.NOT_PRESENT
            else:
                assert (pfn, fault) == (0x40000 + i, 0)
        assert set(table_pages(machine.memory, root).tolist()) == frames.live
        # The range translation fails at the first removed page, or maps it all.
        start = base + 100
        if removed:
            with pytest.raises(IommuFault) as info:
                machine.iommu.translate(BDF, start, (npages << 12) - 100, True)
            assert info.value.iova == max(start, base + (min(removed) << 12))
        else:
            got_segments = machine.iommu.translate(BDF, start, (npages << 12) - 100, True)
            assert got_segments == [Segment(0x40000, 100, (npages << 12) - 100)]
    finally:
        machine.close()


# -- huge leaves ----------------------------------------------------------------------------------


def test_huge_leaves_and_their_tables(
    machine: Machine, builder: PageTableBuilder, frames: Frames
) -> None:
    # 1 GiB of RAM: a 1 GiB leaf needs pfn 0; then a 2 MiB leaf and three 4 KiB pages.
    root = builder.create_root()
    runs = [(0, PAGES_1G), (PAGES_2M * 3, PAGES_2M + 3)]
    builder.map(root, 2 * SIZE_1G, runs)
    got = leaves(machine.memory, root)
    assert got.size.tolist() == [SIZE_1G, SIZE_2M, SIZE_4K, SIZE_4K, SIZE_4K]
    # root -> one L3 table (1G leaf + pointer) -> one L2 table (2M leaf + pointer) -> one L1
    assert len(table_pages(machine.memory, root)) == 4 == len(frames.live)
    machine.iommu.attach(BDF, root)
    across = machine.iommu.translate(BDF, 3 * SIZE_1G - 100, 200, True)
    assert across == [Segment(PAGES_1G - 1, PAGE_SIZE - 100, 100), Segment(PAGES_2M * 3, 0, 100)]

    # The raw format: the L3 entry for IOVA 2 GiB is a 1 GiB leaf of pfn 0.
    l3 = table_pages(machine.memory, root)[1:]
    raw_root = machine.memory.read(root)
    (l3_entry_ptr,) = struct.unpack_from("<Q", raw_root, 0)
    assert l3_entry_ptr & 0xFFF == PTE_PRESENT | PTE_WRITE
    l3_pfn = l3_entry_ptr >> 12
    assert l3_pfn in l3.tolist()
    (leaf_1g,) = struct.unpack_from("<Q", machine.memory.read(l3_pfn), 2 * 8)
    assert leaf_1g == PTE_PRESENT | PTE_WRITE | PTE_LEAF  # pfn 0

    # A huge leaf is never split: unmapping part of it is refused and changes nothing.
    with pytest.raises(MappingError, match="split"):
        builder.unmap(root, 2 * SIZE_1G + SIZE_2M, SIZE_2M)
    with pytest.raises(MappingError, match="split"):
        builder.unmap(root, 3 * SIZE_1G, SIZE_4K)
    assert len(leaves(machine.memory, root).size) == 5
    assert builder.unmap(root, 2 * SIZE_1G, SIZE_1G) == SIZE_1G
    assert len(frames.live) == 4  # the L3 table still holds the pointer to the L2 table


def test_map_refuses_overlap_and_changes_nothing(
    machine: Machine, builder: PageTableBuilder, frames: Frames
) -> None:
    root = builder.create_root()
    builder.map(root, SIZE_2M, [(0x1000, 10)])
    before = (set(frames.live), leaves(machine.memory, root).iova.tolist())
    with pytest.raises(MappingError, match="already mapped"):
        builder.map(root, 0, [(0x2000, 512 + 1)])  # [0, 2M + 4K) overlaps the first page
    with pytest.raises(MappingError, match="already mapped"):
        builder.map(root, 0, [(0x2000, 512 * 2)], max_page=SIZE_2M)
    assert (set(frames.live), leaves(machine.memory, root).iova.tolist()) == before


def test_map_undoes_itself_when_the_allocator_fails(machine: Machine) -> None:
    frames = Frames(*table_region(machine))
    budget = [3]

    def alloc() -> int:
        if budget[0] == 0:
            raise MemoryError("no frames")
        budget[0] -= 1
        return frames.alloc()

    builder = PageTableBuilder(machine.memory, alloc, frames.free)
    root = builder.create_root()
    # Needs root's L3, then L2, then two L1 tables: the second L1 allocation fails.
    with pytest.raises(MemoryError):
        builder.map(root, SIZE_2M - SIZE_4K, [(0x100, 2)])
    assert frames.live == {root}
    assert not leaves(machine.memory, root).iova.size


def test_bad_map_arguments(builder: PageTableBuilder, machine: Machine) -> None:
    root = builder.create_root()
    with pytest.raises(MappingError):
        builder.map(root, 100, [(0, 1)])
    with pytest.raises(MappingError):
        builder.map(root, 0, [(machine.memory.frames - 1, 2)])
    with pytest.raises(MappingError):
        builder.map(root, IOVA_LIMIT - SIZE_4K, [(0, 2)])
    with pytest.raises(MappingError):
        builder.map(root, 0, [(0, 1)], max_page=12345)
    with pytest.raises(MappingError):
        builder.unmap(root, 0, 100)


# -- faults ---------------------------------------------------------------------------------------


def fault_of(machine: Machine, bdf: str, iova: int, write: bool) -> FaultReason:
    with pytest.raises(IommuFault) as info:
        machine.iommu.translate(bdf, iova, 8, write)
    assert info.value.bdf == bdf and info.value.write == write
    vector = machine.iommu.translate_pages(bdf, np.array([iova >> 12]), write)
    assert vector.faults.tolist() == [info.value.reason] and vector.pfns.tolist() == [-1]
    return info.value.reason


def test_faults_are_classified_and_counted_per_device(
    machine: Machine, builder: PageTableBuilder
) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0x100, 4)], write=True)
    builder.map(root, 4 * SIZE_4K, [(0x200, 4)], write=False)
    iommu = machine.iommu

    assert fault_of(machine, BDF, 0, True) is FaultReason.NO_DOMAIN
    iommu.attach(BDF, root)
    assert iommu.translate(BDF, 4 * SIZE_4K, 8, False) == [Segment(0x200, 0, 8)]
    assert fault_of(machine, BDF, 4 * SIZE_4K, True) is FaultReason.READ_ONLY
    assert fault_of(machine, BDF, 8 * SIZE_4K, False) is FaultReason.NOT_PRESENT
    assert fault_of(machine, BDF, IOVA_LIMIT, False) is FaultReason.OUT_OF_RANGE

    # Garbage in a leaf: a reserved bit, then a frame outside RAM.
    l1 = int(table_pages(machine.memory, root)[-1])
    good = machine.memory.read(l1)[:8]
    machine.memory.write(l1, struct.pack("<Q", (0x100 << 12) | 1 | 1 << 60))
    assert fault_of(machine, BDF, 0, False) is FaultReason.MALFORMED
    machine.memory.write(l1, struct.pack("<Q", (machine.memory.frames << 12) | 1))
    assert fault_of(machine, BDF, 0, False) is FaultReason.BAD_ADDRESS
    machine.memory.write(l1, good)
    assert iommu.translate(BDF, 0, 8, True) == [Segment(0x100, 0, 8)]

    # Each fault counted twice (translate and translate_pages), against BDF only.
    assert iommu.fault_counts(BDF) == {
        FaultReason.NO_DOMAIN: 2,
        FaultReason.READ_ONLY: 2,
        FaultReason.NOT_PRESENT: 2,
        FaultReason.OUT_OF_RANGE: 2,
        FaultReason.MALFORMED: 2,
        FaultReason.BAD_ADDRESS: 2,
    }
    assert iommu.fault_count(BDF) == 12
    assert iommu.fault_count(OTHER_BDF) == 0

    # lookup walks the same way without counting.
    with pytest.raises(IommuFault):
        iommu.lookup(BDF, 8 * SIZE_4K, 8, False)
    assert iommu.fault_count(BDF) == 12

    iommu.detach(BDF)
    iommu.detach(BDF)  # idempotent
    assert fault_of(machine, BDF, 0, False) is FaultReason.NO_DOMAIN


def test_misaligned_huge_leaf_is_malformed(machine: Machine, builder: PageTableBuilder) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0, PAGES_2M)])  # one 2 MiB leaf in the L2 table
    l2 = int(table_pages(machine.memory, root)[-1])
    machine.memory.write(l2, struct.pack("<Q", (1 << 12) | PTE_PRESENT | PTE_LEAF))
    machine.iommu.attach(BDF, root)
    assert fault_of(machine, BDF, 0, False) is FaultReason.MALFORMED


def test_weighted_faults(machine: Machine) -> None:
    result = machine.iommu.translate_pages(BDF, np.array([1, 2]), True, np.array([5, 7]))
    assert result.faults.tolist() == [FaultReason.NO_DOMAIN] * 2
    assert machine.iommu.fault_count(BDF) == 12


def test_write_permission_is_the_and_of_every_level(
    machine: Machine, builder: PageTableBuilder
) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0x100, 1)], write=True)
    entry = int.from_bytes(machine.memory.read(root)[:8], "little")
    machine.memory.write(root, (entry & ~PTE_WRITE).to_bytes(8, "little"))
    machine.iommu.attach(BDF, root)
    assert fault_of(machine, BDF, 0, True) is FaultReason.READ_ONLY
    assert not leaves(machine.memory, root).write.any()


# -- what the walk reads --------------------------------------------------------------------------


def test_walk_reads_exactly_the_table_pages(
    machine: Machine, builder: PageTableBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0x100, 700)])
    builder.map(root, 5 * SIZE_1G + 3 * SIZE_2M, [(PAGES_2M * 9, PAGES_2M * 2 + 1)])
    builder.map(root, 200 * SIZE_1G, [(0x7000, 3)], write=False)
    machine.iommu.attach(BDF, root)
    memory = machine.memory
    read: set[int] = set()
    real_read_at, real_gather = memory.read_at, memory.gather

    def read_at(phys: int, length: int) -> bytes:
        read.add(phys >> PAGE_SHIFT)
        return real_read_at(phys, length)

    def gather(phys: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.uint8]:
        read.update((phys >> PAGE_SHIFT).tolist())
        return real_gather(phys, length)

    monkeypatch.setattr(memory, "read_at", read_at)
    monkeypatch.setattr(memory, "gather", gather)
    every = leaves(memory, root)
    for iova in every.iova.tolist():
        machine.iommu.translate(BDF, iova, 1, False)
    expected = set(table_pages(memory, root).tolist())
    assert read == expected
    read.clear()
    machine.iommu.translate_pages(BDF, every.iova >> PAGE_SHIFT, False)
    assert read == expected


def test_walking_a_lost_table_does_not_make_it_resident(
    builder: PageTableBuilder, machine: Machine
) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0x100, 1)])
    pages = table_pages(machine.memory, root)
    machine.memory.zero(int(pages[0]), 1)
    machine.memory.zero(int(pages[-1]), 1)
    machine.iommu.attach(BDF, root)
    before = machine.memory.resident_bytes()
    assert fault_of(machine, BDF, 0, False) is FaultReason.NOT_PRESENT
    assert machine.memory.resident_bytes() == before


# -- registers ------------------------------------------------------------------------------------


def test_bdf_parsing() -> None:
    assert parse_bdf("0000:0A:1f.7") == "0000:0a:1f.7"
    for bad in ("0000:01:20.0", "0:01:00.0", "0000:01:00.8", "0000:01:00", "x"):
        with pytest.raises(ValueError):
            parse_bdf(bad)


def test_contexts_survive_dump_and_load(
    machine: Machine, builder: PageTableBuilder, tmp_path: Path
) -> None:
    root = builder.create_root()
    builder.map(root, 0, [(0x100, 3)])
    machine.iommu.attach(BDF, root)
    with pytest.raises(IommuFault):
        machine.iommu.translate(BDF, SIZE_1G, 1, False)
    machine.dump(tmp_path)
    loaded = Machine.load(tmp_path)
    try:
        assert loaded.iommu.contexts() == {BDF: root}
        assert loaded.iommu.fault_counts(BDF) == {FaultReason.NOT_PRESENT: 1}
        assert loaded.iommu.translate(BDF, 4096, 2 * 4096, True) == [Segment(0x101, 0, 8192)]
    finally:
        loaded.close()


def test_attach_validates(machine: Machine) -> None:
    with pytest.raises(ValueError):
        machine.iommu.attach(BDF, machine.memory.frames)
    with pytest.raises(ValueError):
        machine.iommu.attach("nope", 0)
    assert isinstance(machine.memory, PhysicalMemory)
