"""The I/O page-table format, and reading and planning tables in it.

The point of modelling the format at byte level is the one rule of the emulation: a device
keeps doing DMA across a kexec only if the pages holding its I/O page tables survive in
RAM. The walker (`luod.hw.iommu`) reads entries from physical memory on every translation,
the builder (`luod.hw.io_pgtable`) writes them, and this module defines the format both
follow, reads a domain's tables back (`table_pages`, `leaves`) and plans the leaves a
mapping needs (`plan_leaves`).

Page-table format (byte-exact; modelled on x86 / VT-d second-level paging):

- An I/O virtual address (IOVA) has 48 bits. Translation walks 4 levels; level 4 is the root.
  Level L indexes with IOVA bits [12 + 9*L - 1 : 12 + 9*(L-1)], i.e. bits 47:39 (L4),
  38:30 (L3), 29:21 (L2), 20:12 (L1). The low 12 bits are the offset in a 4 KiB page.
- A table is one 4 KiB page (any pfn) holding 512 entries, each a little-endian u64;
  entry i lives at byte offset 8*i.
- Entry bits: 0 PRESENT (readable), 1 WRITE, 7 LEAF (huge page), 12..51 the frame number
  (`entry = (pfn << 12) | flags`). Every other bit is reserved and must be zero.
- At level 4 an entry always points at a level-3 table (LEAF is reserved). At levels 3 and
  2 an entry either points at the next table (LEAF clear) or maps a 1 GiB (L3) / 2 MiB (L2)
  leaf whose frame number must be aligned to the leaf size. At level 1 an entry maps a
  4 KiB page (LEAF is reserved).
- Write permission is the AND of WRITE over every entry of the walk, as on x86; the
  builder always sets WRITE on table entries, so a leaf's WRITE bit decides.
- A zero entry is not present. A fresh table page is a hole (reads as zero), so a freshly
  allocated table maps nothing.

Reads of RAM always go through pread (`read`, `read_at`, `gather`), never through the
mapping, so reading a lost table never makes its hole resident again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

Int64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

IOVA_BITS = 48
IOVA_LIMIT = 1 << IOVA_BITS
LEVELS = 4
ENTRIES_PER_TABLE = 512
ENTRY_SIZE = 8

PTE_PRESENT = 0x1
PTE_WRITE = 0x2
PTE_LEAF = 0x80
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)  # bits 12..51
PTE_RESERVED = ((1 << 64) - 1) & ~(PTE_ADDR_MASK | PTE_PRESENT | PTE_WRITE | PTE_LEAF)

SIZE_4K = 1 << 12
SIZE_2M = 1 << 21
SIZE_1G = 1 << 30
PAGE_SIZES = (SIZE_4K, SIZE_2M, SIZE_1G)


def level_shift(level: int) -> int:
    """Bit position of the lowest IOVA bit indexing a level-`level` table."""
    return PAGE_SHIFT + 9 * (level - 1)


def entry_span(level: int) -> int:
    """Bytes of IOVA covered by one entry of a level-`level` table."""
    return 1 << level_shift(level)


class MappingError(ValueError):
    """A map or unmap the page tables cannot express (overlap, split of a huge leaf,
    misalignment, out of range)."""


class Leaves(NamedTuple):
    """Every leaf of a domain, sorted by IOVA, as parallel arrays (never one object per
    page): IOVA, first frame, size in bytes, and effective write permission."""

    iova: Int64Array
    pfn: Int64Array
    size: Int64Array
    write: BoolArray


def read_table(memory: PhysicalMemory, table_pfn: int) -> U64Array:
    if not 0 <= table_pfn < memory.frames:
        raise MappingError(f"table page {table_pfn:#x} outside RAM")
    return np.frombuffer(memory.read(table_pfn), dtype="<u8").astype(np.uint64)


def _children(entries: U64Array) -> tuple[Int64Array, Int64Array]:
    """(indices, pfns) of the present non-leaf entries of a table above level 1."""
    mask = ((entries & np.uint64(PTE_PRESENT)) != 0) & ((entries & np.uint64(PTE_LEAF)) == 0)
    index = np.flatnonzero(mask)
    pfn = ((entries[index] & np.uint64(PTE_ADDR_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    return index.astype(np.int64), pfn


def table_pages(memory: PhysicalMemory, root_pfn: int) -> Int64Array:
    """Every page holding a table of the domain rooted at `root_pfn` (root included),
    sorted: exactly the frames a kernel must preserve for the domain's DMA to keep
    translating after a kexec."""
    found = [np.array([root_pfn], dtype=np.int64)]
    frontier = [root_pfn]
    for _level in range(LEVELS, 1, -1):
        next_frontier: list[int] = []
        for table in frontier:
            _, pfns = _children(read_table(memory, table))
            found.append(pfns)
            next_frontier.extend(pfns.tolist())
        frontier = next_frontier
    return np.unique(np.concatenate(found))


def leaves(memory: PhysicalMemory, root_pfn: int) -> Leaves:
    """Every mapping of the domain rooted at `root_pfn`. Cost grows with table pages."""
    parts: list[tuple[Int64Array, Int64Array, Int64Array, BoolArray]] = []

    def visit(table: int, level: int, base: int, writable: bool) -> None:
        entries = read_table(memory, table)
        present = (entries & np.uint64(PTE_PRESENT)) != 0
        huge = (entries & np.uint64(PTE_LEAF)) != 0
        is_leaf = present & huge if level > 1 else present
        index = np.flatnonzero(is_leaf)
        if index.size:
            e = entries[index]
            parts.append(
                (
                    base + index.astype(np.int64) * entry_span(level),
                    ((e & np.uint64(PTE_ADDR_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64),
                    np.full(index.size, entry_span(level), dtype=np.int64),
                    ((e & np.uint64(PTE_WRITE)) != 0) & writable,
                )
            )
        if level > 1:
            child_index, child_pfn = _children(entries)
            for i, child in zip(child_index.tolist(), child_pfn.tolist(), strict=True):
                child_writable = writable and bool(int(entries[i]) & PTE_WRITE)
                visit(child, level - 1, base + i * entry_span(level), child_writable)

    visit(root_pfn, LEVELS, 0, True)
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Leaves(empty, empty.copy(), empty.copy(), np.zeros(0, dtype=np.bool_))
    iova, pfn, size, write = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(iova, kind="stable")
    return Leaves(iova[order], pfn[order], size[order], write[order].astype(np.bool_))


class LeafRun(NamedTuple):
    level: int  # leaf level: 1 (4K), 2 (2M), 3 (1G)
    iova: int
    pfn: int
    nleaves: int  # consecutive leaves of that level, physically contiguous


def plan_leaves(iova: int, runs: Iterable[tuple[int, int]], max_page: int) -> list[LeafRun]:
    """Split runs of frames mapped back to back from `iova` into leaves of the largest size
    that fits: a leaf of size S needs iova % S == 0, phys % S == 0 and S bytes left in the
    run. This equals choosing greedily page by page. Cost is O(number of runs)."""
    segments: list[LeafRun] = []
    cur = iova >> PAGE_SHIFT
    sizes = [s >> PAGE_SHIFT for s in PAGE_SIZES if s <= max_page]  # in pages, ascending

    def emit(level: int, start: int, pfn: int, npages: int) -> None:
        if npages > 0:
            per = entry_span(level) >> PAGE_SHIFT
            segments.append(LeafRun(level, start << PAGE_SHIFT, pfn, npages // per))

    def split(start: int, pfn: int, npages: int, size_index: int) -> None:
        # Cover [start, start + npages) with leaves of sizes[size_index] where both
        # addresses allow it and smaller leaves for the head and tail.
        if size_index == 0:
            emit(1, start, pfn, npages)
            return
        size = sizes[size_index]
        end = start + npages
        lo = -(-start // size) * size
        hi = end // size * size
        if (start - pfn) % size or lo >= hi:
            split(start, pfn, npages, size_index - 1)
            return
        split(start, pfn, lo - start, size_index - 1)
        emit(size_index + 1, lo, pfn + (lo - start), hi - lo)
        split(hi, pfn + (hi - start), end - hi, size_index - 1)

    for pfn, npages in runs:
        split(cur, pfn, npages, len(sizes) - 1)
        cur += npages
    return segments
