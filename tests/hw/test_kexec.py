"""Devices are hardware: they survive a kexec, and their DMA keeps translating only
through page-table pages that survived in RAM.

A kexec is emulated at the hw level as the next kernel sees it: the machine (bus, IOMMU
context registers, RAM) is untouched, and the next kernel releases every frame it was not
told to keep (a punched hole, reading as zero), as `Kernel.boot` does with
`data_extents()` minus the preserved set.
"""

from __future__ import annotations

import numpy as np

from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.iommu import FaultReason
from luod.hw.machine import Machine
from luod.hw.memory import PhysicalMemory
from luod.hw.pagetable import table_pages
from tests.hw.conftest import BDF
from tests.hw.dma import DATA_PFN, ring_bytes, start_dma

RATE = 1_000_000  # one record per microsecond
STEP = 1_000_000  # 1 ms: 1000 records


def next_kernel_keeps(memory: PhysicalMemory, keep: set[int]) -> None:
    """Release every frame that holds data and is not in `keep`."""
    starts, ends = memory.data_extents()
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        for pfn in range(start, end):
            if pfn not in keep:
                memory.zero(pfn)


def test_dma_faults_when_the_next_kernel_lost_the_tables(
    machine: Machine, builder: PageTableBuilder
) -> None:
    root, engine = start_dma(machine, builder, BDF, rate_hz=RATE)
    machine.advance(STEP)
    assert (engine.writes, engine.faults) == (1000, 0)
    before = ring_bytes(machine)
    tables = table_pages(machine.memory, root)

    # The next kernel kept the data but not the table pages.
    next_kernel_keeps(machine.memory, set(range(DATA_PFN, DATA_PFN + 2)))
    for pfn in tables.tolist():  # (already released above; explicit for the reader)
        machine.memory.zero(pfn)

    machine.advance(STEP)
    # The device and its context register survived, so it kept trying: every record of
    # the step faulted at the root's now not-present entry, and nothing landed.
    assert machine.iommu.root_of(BDF) == root
    assert engine.issued == 2000
    assert (engine.writes, engine.faults) == (1000, 1000)
    assert engine.faults == RATE * STEP // 1_000_000_000
    assert machine.iommu.fault_counts(BDF) == {FaultReason.NOT_PRESENT: 1000}
    assert ring_bytes(machine) == before


def test_dma_goes_on_when_the_tables_were_preserved(
    machine: Machine, builder: PageTableBuilder
) -> None:
    root, engine = start_dma(machine, builder, BDF, rate_hz=RATE)
    machine.memory.write(0x5000, b"not preserved")
    machine.advance(STEP)
    tables = set(table_pages(machine.memory, root).tolist())
    data = set(range(DATA_PFN, DATA_PFN + 2))

    next_kernel_keeps(machine.memory, tables | data)
    assert machine.memory.read(0x5000)[:13] == bytes(13)

    machine.advance(STEP)
    assert (engine.issued, engine.writes, engine.faults) == (2000, 2000, 0)
    assert engine.verify().ok


def test_losing_one_leaf_table_faults_only_its_pages(
    machine: Machine, builder: PageTableBuilder
) -> None:
    # A window across two level-1 tables (the IOVA crosses a 2 MiB boundary).
    root = builder.create_root()
    iova = (1 << 30) - 4096
    builder.map(root, iova, [(DATA_PFN, 2)])
    machine.iommu.attach(BDF, root)
    engine = machine.pci[BDF].dma
    engine.start(iova, 8192, 11, RATE)
    pages = table_pages(machine.memory, root)
    assert len(pages) == 1 + 1 + 2 + 2  # root, L3, and an L2 and L1 each side of 1 GiB

    # Lose the leaf table mapping the second page only.
    second_leaf = _leaf_table_of(machine, root, iova + 4096)
    machine.memory.zero(second_leaf)
    machine.advance(128_000)
    assert (engine.writes, engine.faults) == (64, 64)
    assert machine.memory.read(DATA_PFN + 1) == bytes(4096)


def _leaf_table_of(machine: Machine, root: int, iova: int) -> int:
    table = root
    for level in (4, 3, 2):
        index = (iova >> (12 + 9 * (level - 1))) & 511
        entry = int(np.frombuffer(machine.memory.read(table), dtype="<u8")[index])
        table = (entry & ((1 << 52) - 1)) >> 12
    return table


def test_data_outside_the_kept_ranges_is_exactly_the_data_minus_them() -> None:
    memory = PhysicalMemory(64 << 12)
    try:
        for pfn in (1, 2, 3, 10, 11, 20, 30, 31, 32, 33, 63):
            memory.write(pfn, b"x")
        keep_starts = np.array([2, 10, 25, 32], dtype=np.int64)
        keep_ends = np.array([3, 12, 31, 34], dtype=np.int64)
        starts, ends = memory.data_extents_outside(keep_starts, keep_ends)
        # [1, 4) loses frame 2 to the kept [2, 3); [30, 34) keeps 30 and 32..33, loses 31.
        assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
            (1, 2),
            (3, 4),
            (20, 21),
            (31, 32),
            (63, 64),
        ]
        nothing_kept = np.zeros(0, dtype=np.int64)
        all_starts, all_ends = memory.data_extents_outside(nothing_kept, nothing_kept)
        assert np.array_equal(all_starts, memory.data_extents()[0])
        assert np.array_equal(all_ends, memory.data_extents()[1])
    finally:
        memory.close()
