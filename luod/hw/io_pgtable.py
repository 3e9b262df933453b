"""`PageTableBuilder`: the software half of the IOMMU, which writes and edits I/O page
tables in the format of `luod.hw.pagetable` (in Linux, the IOMMU driver's io-pgtable).

It is pure mechanism with no state of its own (frames come from and go back to the
caller's allocator through callbacks); the kernel model decides what to map, when, and
which table pages to preserve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.hw.pagetable import (
    ENTRIES_PER_TABLE,
    ENTRY_SIZE,
    IOVA_LIMIT,
    LEVELS,
    PAGE_SIZES,
    PTE_ADDR_MASK,
    PTE_LEAF,
    PTE_PRESENT,
    PTE_WRITE,
    SIZE_1G,
    Int64Array,
    LeafRun,
    Leaves,
    MappingError,
    U64Array,
    entry_span,
    leaves,
    level_shift,
    plan_leaves,
    read_table,
    table_pages,
)


class PageTableBuilder:
    """Writes and edits I/O page tables in the format of `luod.hw.pagetable`.

    Table pages come from `alloc_page()` (any free frame; the builder punches it to zero)
    and go back through `free_page(pfn)` when a table becomes empty. Invariant kept by
    `map` and `unmap`: a present table entry always leads to at least one leaf, so every
    table page of a domain is needed and `table_pages` lists nothing stale.
    """

    def __init__(
        self,
        memory: PhysicalMemory,
        alloc_page: Callable[[], int],
        free_page: Callable[[int], None],
    ) -> None:
        self._memory = memory
        self._alloc_page = alloc_page
        self._free_page = free_page

    def _new_table(self) -> int:
        pfn = self._alloc_page()
        if not 0 <= pfn < self._memory.frames:
            raise MappingError(f"allocator returned frame {pfn:#x} outside RAM")
        self._memory.zero(pfn)  # a hole: all entries not present, no host memory used
        return pfn

    def _release_table(self, pfn: int) -> None:
        self._memory.zero(pfn)
        self._free_page(pfn)

    def create_root(self) -> int:
        """A new, empty domain: its level-4 table page."""
        return self._new_table()

    def destroy(self, root_pfn: int) -> None:
        """Free every table page of the domain (its mappings vanish with them)."""
        for pfn in table_pages(self._memory, root_pfn).tolist():
            self._release_table(pfn)

    def table_pages(self, root_pfn: int) -> Int64Array:
        return table_pages(self._memory, root_pfn)

    def leaves(self, root_pfn: int) -> Leaves:
        return leaves(self._memory, root_pfn)

    # -- map ---------------------------------------------------------------------------------

    def map(
        self,
        root_pfn: int,
        iova: int,
        runs: Iterable[tuple[int, int]],
        *,
        write: bool = True,
        max_page: int = SIZE_1G,
    ) -> int:
        """Map the frame runs `(pfn, npages)` back to back from `iova`, with leaves up to
        `max_page` bytes. All or nothing: MappingError if any part is already mapped (no
        table is touched then); if the allocator fails midway, what was mapped is undone.
        Returns the bytes mapped. Cost: O(runs + table pages written)."""
        memory = self._memory
        if max_page not in PAGE_SIZES:
            raise MappingError(f"max_page {max_page} is not one of {PAGE_SIZES}")
        if iova < 0 or iova % PAGE_SIZE:
            raise MappingError(f"iova {iova:#x} is not page aligned")
        run_list = [(int(p), int(n)) for p, n in runs]
        total = 0
        for pfn, npages in run_list:
            if npages <= 0 or pfn < 0 or pfn + npages > memory.frames:
                raise MappingError(f"bad run of {npages} frames at {pfn:#x}")
            total += npages << PAGE_SHIFT
        if iova + total > IOVA_LIMIT:
            raise MappingError(f"[{iova:#x}, {iova + total:#x}) outside the 48-bit IOVA space")
        segments = plan_leaves(iova, run_list, max_page)
        flags = PTE_PRESENT | (PTE_WRITE if write else 0)
        self._check_free(root_pfn, segments)
        cache: dict[tuple[int, int], int] = {}
        try:
            for seg in segments:
                self._write_segment(root_pfn, seg, flags, cache)
        except BaseException:
            # The range was entirely unmapped before; unmapping it restores that and frees
            # any table created on the way.
            self.unmap(root_pfn, iova, total)
            raise
        return total

    def _entry(self, table: int, index: int) -> int:
        raw = self._memory.read_at((table << PAGE_SHIFT) + index * ENTRY_SIZE, ENTRY_SIZE)
        return int.from_bytes(raw, "little")

    def _set_entry(self, table: int, index: int, value: int) -> None:
        self._memory.write(table, value.to_bytes(ENTRY_SIZE, "little"), index * ENTRY_SIZE)

    def _table_at(
        self, root: int, level: int, iova: int, cache: dict[tuple[int, int], int], create: bool
    ) -> int | None:
        """The level-`level` table covering `iova`, creating missing tables if `create`;
        None if absent and not creating. MappingError if a huge leaf is in the way."""
        table = root
        for upper in range(LEVELS, level, -1):
            key = (upper - 1, iova >> level_shift(upper))
            cached = cache.get(key)
            if cached is not None:
                table = cached
                continue
            index = (iova >> level_shift(upper)) & (ENTRIES_PER_TABLE - 1)
            entry = self._entry(table, index)
            if entry & PTE_PRESENT:
                if entry & PTE_LEAF:
                    raise MappingError(f"iova {iova:#x} is already mapped by a huge leaf")
                table = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
            elif create:
                child = self._new_table()
                self._set_entry(table, index, (child << PAGE_SHIFT) | PTE_PRESENT | PTE_WRITE)
                table = child
            else:
                return None
            cache[key] = table
        return table

    def _pieces(self, seg: LeafRun) -> Iterable[tuple[int, int, int, int]]:
        """(iova, first pfn, first index, count) per table the segment's entries fall in."""
        span = entry_span(seg.level)
        per = span >> PAGE_SHIFT
        done = 0
        while done < seg.nleaves:
            iova = seg.iova + done * span
            index = (iova >> level_shift(seg.level)) & (ENTRIES_PER_TABLE - 1)
            count = min(seg.nleaves - done, ENTRIES_PER_TABLE - index)
            yield iova, seg.pfn + done * per, index, count
            done += count

    def _check_free(self, root: int, segments: list[LeafRun]) -> None:
        cache: dict[tuple[int, int], int] = {}
        tables: dict[int, U64Array] = {}
        for seg in segments:
            for iova, _pfn, index, count in self._pieces(seg):
                table = self._table_at(root, seg.level, iova, cache, create=False)
                if table is None:
                    continue
                entries = tables.get(table)
                if entries is None:
                    entries = tables[table] = read_table(self._memory, table)
                if entries[index : index + count].any():
                    raise MappingError(f"iova {iova:#x} is already mapped")

    def _write_segment(
        self, root: int, seg: LeafRun, flags: int, cache: dict[tuple[int, int], int]
    ) -> None:
        per = entry_span(seg.level) >> PAGE_SHIFT
        leaf_flags = flags | (PTE_LEAF if seg.level > 1 else 0)
        for iova, pfn, index, count in self._pieces(seg):
            table = self._table_at(root, seg.level, iova, cache, create=True)
            assert table is not None
            values = ((pfn + np.arange(count, dtype=np.int64) * per) << PAGE_SHIFT) | leaf_flags
            view = self._memory.view(table).view("<u8")
            view[index : index + count] = values.astype(np.uint64)

    # -- unmap -------------------------------------------------------------------------------

    def unmap(self, root_pfn: int, iova: int, length: int) -> int:
        """Remove every leaf inside [iova, iova + length) and free tables left empty.
        Holes in the range are fine; a huge leaf that sticks out of the range is refused
        (MappingError, nothing changed), as leaves are never split. Returns bytes unmapped."""
        if iova < 0 or length < 0 or (iova | length) % PAGE_SIZE:
            raise MappingError(f"unmap [{iova:#x}, +{length:#x}) is not page aligned")
        if iova + length > IOVA_LIMIT:
            raise MappingError(f"unmap [{iova:#x}, +{length:#x}) outside the IOVA space")
        if not length:
            return 0
        end = iova + length
        for point in (iova, end - 1):
            leaf = self._leaf_containing(root_pfn, point)
            if leaf is not None and (leaf[0] < iova or leaf[0] + leaf[1] > end):
                raise MappingError(
                    f"unmap [{iova:#x}, {end:#x}) would split the {leaf[1]:#x}-byte leaf "
                    f"at {leaf[0]:#x}"
                )
        unmapped, _ = self._unmap_table(root_pfn, LEVELS, 0, iova, end)
        return unmapped

    def _leaf_containing(self, root: int, iova: int) -> tuple[int, int] | None:
        table = root
        for level in range(LEVELS, 0, -1):
            entry = self._entry(table, (iova >> level_shift(level)) & (ENTRIES_PER_TABLE - 1))
            if not entry & PTE_PRESENT:
                return None
            if level == 1 or entry & PTE_LEAF:
                span = entry_span(level)
                return iova & ~(span - 1), span
            table = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
        return None

    def _unmap_table(self, table: int, level: int, base: int, lo: int, hi: int) -> tuple[int, bool]:
        """Unmap [lo, hi) within the table covering IOVA from `base`; (bytes, now empty)."""
        shift = level_shift(level)
        span = 1 << shift
        first = (max(lo, base) - base) >> shift
        last = (min(hi, base + ENTRIES_PER_TABLE * span) - base + span - 1) >> shift
        entries = read_table(self._memory, table)
        present = np.flatnonzero(entries[first:last] & np.uint64(PTE_PRESENT)) + first
        unmapped = 0
        if level == 1:
            if present.size:
                self._memory.view(table).view("<u8")[first:last] = 0
                entries[first:last] = 0
                unmapped = int(present.size) * span
        else:
            for index in present.tolist():
                entry = int(entries[index])
                if entry & PTE_LEAF:
                    unmapped += span  # inside [lo, hi): `unmap` refused straddling leaves
                    empty = True
                else:
                    child = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
                    done, empty = self._unmap_table(child, level - 1, base + index * span, lo, hi)
                    unmapped += done
                    if empty:
                        self._release_table(child)
                if empty:
                    self._set_entry(table, index, 0)
                    entries[index] = 0
        return unmapped, not entries.any()
