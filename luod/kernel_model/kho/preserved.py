"""The outgoing kernel's preserved-memory set: which (pfn, order) blocks are preserved.

One bitmap per order, as KHO keeps one per order (`order_bitmap`). This module owns the
rules across orders: validating what is preserved or unpreserved (alignment, RAM bounds,
scratch), refusing a frame covered twice, and the queries over all orders.

Invariant: no frame is covered by two preserved blocks, whatever their orders.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from luod.kernel_model.errors import (
    AlreadyPreserved,
    BadAlignment,
    FrameInScratch,
    KernelError,
    NotPreserved,
)
from luod.kernel_model.extents import Extents, Int64Array, sorted_unique
from luod.kernel_model.kho.order_bitmap import OrderBitmap
from luod.kernel_model.mm import MAX_ORDER


def split_aligned(pfn: int, npages: int) -> list[tuple[int, int, int]]:
    """Split [pfn, pfn + npages) into naturally aligned blocks, largest first, as
    `kho_preserve_pages` does. Returns runs (order, first block index, block count)."""
    runs: list[tuple[int, int, int]] = []
    pos, end = pfn, pfn + npages
    while pos < end:
        align = (pos & -pos).bit_length() - 1 if pos else MAX_ORDER
        order = min(align, MAX_ORDER, (end - pos).bit_length() - 1)
        count = (end - pos) >> order if order == MAX_ORDER else 1
        runs.append((order, pos >> order, count))
        pos += count << order
    return runs


class PreservedSet:
    """All preserved blocks of a machine with `frames` frames."""

    def __init__(self, frames: int, forbidden: Extents | None = None) -> None:
        self.frames = frames
        self.forbidden = forbidden or Extents.empty()
        self.orders = [OrderBitmap(o) for o in range(MAX_ORDER + 1)]

    def _refuse_forbidden(
        self, first_blocks: Int64Array, end_blocks: Int64Array, order: int
    ) -> None:
        if not self.forbidden:
            return
        if order:
            first_blocks, end_blocks = first_blocks << order, end_blocks << order
        i = self.forbidden.meets_sorted(first_blocks, end_blocks)
        if i is not None:
            self._in_scratch(int(first_blocks[i]), int(end_blocks[i]))

    def _refuse_forbidden_folios(self, pfns: Int64Array, size: int) -> None:
        """`_refuse_forbidden` for sorted, disjoint folios of `size` frames, without
        building their end array: a folio meets [s, e) iff its pfn is in (s - size, e)."""
        f = self.forbidden
        if not f:
            return
        lo = np.searchsorted(pfns, f.starts - size + 1, side="left")
        hi = np.searchsorted(pfns, f.ends, side="left")
        if (hi > lo).any():
            i = int(lo[hi > lo].min())
            self._in_scratch(int(pfns[i]), int(pfns[i]) + size)

    def _in_scratch(self, start: int, end: int) -> None:
        clash = self.forbidden & Extents.of(start, end)
        bad = int(clash.starts[0])
        raise FrameInScratch(f"frame {bad:#x} lies in a KHO scratch region", obj=f"pfn {bad:#x}")

    # -- validation -----------------------------------------------------------------------

    def _folio_runs(
        self, pfns: npt.ArrayLike, order: int
    ) -> tuple[Int64Array, Int64Array, Int64Array]:
        """Validate folios; returns (sorted pfns, first pfn of each run, last pfn of each run),
        where a run is a stretch of back-to-back folios. With RANGE_PATH_MAX_RUNS runs or
        more, every folio stands for itself (the arrays are the sorted pfns)."""
        if not 0 <= order <= MAX_ORDER:
            raise BadAlignment(f"folio order {order} outside 0..{MAX_ORDER}")
        size = 1 << order
        p = np.asarray(pfns, dtype=np.int64).reshape(-1)
        if p.size == 0:
            return p, p, p
        step = np.diff(p)
        if step.size and int(step.min()) <= 0:  # not strictly increasing: sort, find repeats
            p = np.sort(p, kind="stable")  # timsort: linear on a few sorted runs
            step = np.diff(p)
            dup = np.flatnonzero(step == 0)
            if dup.size:
                raise AlreadyPreserved(f"folio at pfn {int(p[dup[0]]):#x} given twice")
        if int(p[0]) < 0 or int(p[-1]) + size > self.frames:
            raise KernelError(f"folio at pfn {int(p[-1]):#x} is outside RAM")
        if np.count_nonzero(step != size) >= self.RANGE_PATH_MAX_RUNS:
            # Scattered: the block path needs no runs, only every folio aligned.
            if order and (p & (size - 1)).any():
                bad = int(p[np.flatnonzero(p & (size - 1))[0]])
                raise BadAlignment(f"pfn {bad:#x} is not aligned to its order {order}")
            return p, p, p
        breaks = np.flatnonzero(step != size)
        first = p[np.concatenate(([0], breaks + 1))]
        last = p[np.concatenate((breaks, [p.size - 1]))]
        # Inside a run each folio follows the previous by exactly `size`: aligned iff its
        # first folio is, so checking run starts checks them all.
        misaligned = np.flatnonzero(first & (size - 1))
        if misaligned.size:
            bad = int(first[misaligned[0]])
            raise BadAlignment(f"pfn {bad:#x} is not aligned to its order {order}")
        return p, first, last

    # Few runs: work on ranges (a memset per run); many: work block by block.
    RANGE_PATH_MAX_RUNS = 256

    def _overlap(self, order: int, blocks: Int64Array) -> int | None:
        """pfn of the first frame of `blocks` already covered at any order."""
        for other in self.orders:
            if not other.count:
                continue
            shift = other.order - order
            if shift == 0:
                hit = other.first_set(blocks)
                if hit is not None:
                    return hit << order
            elif shift > 0:
                hit = other.first_set(sorted_unique(blocks >> shift))
                if hit is not None:
                    return hit << other.order
            else:
                finer = other.blocks()
                coarse = finer >> -shift
                at = np.minimum(np.searchsorted(blocks, coarse), blocks.size - 1)
                inside = blocks[at] == coarse
                if inside.any():
                    return int(finer[np.flatnonzero(inside)[0]]) << other.order
        return None

    def _overlap_range(self, order: int, b0: int, b1: int) -> int | None:
        for other in self.orders:
            if not other.count:
                continue
            shift = other.order - order
            if shift >= 0:
                hit = other.first_set_in_range(b0 >> shift, ((b1 - 1) >> shift) + 1)
            else:
                hit = other.first_set_in_range(b0 << -shift, b1 << -shift)
            if hit is not None:
                return hit << other.order
        return None

    # -- mutation -------------------------------------------------------------------------

    def _runs_to_spans(self, runs: list[tuple[int, int]], order: int) -> list[tuple[int, int]]:
        """Validate runs of folios; returns block spans [b0, b1), sorted, disjoint."""
        if not 0 <= order <= MAX_ORDER:
            raise BadAlignment(f"folio order {order} outside 0..{MAX_ORDER}")
        spans = sorted((pfn >> order, (pfn >> order) + n) for pfn, n in runs if n > 0)
        for b0, b1 in spans:
            if b0 << order < 0 or b1 << order > self.frames:
                raise KernelError(f"folio at pfn {b0 << order:#x} is outside RAM")
        for pfn, _ in runs:
            if pfn & ((1 << order) - 1):
                raise BadAlignment(f"pfn {pfn:#x} is not aligned to its order {order}")
        for (_, e0), (s1, _) in itertools.pairwise(spans):
            if s1 < e0:
                raise AlreadyPreserved(f"frame {s1 << order:#x} given twice")
        return spans

    def add_folio_runs(self, runs: list[tuple[int, int]], order: int) -> None:
        spans = self._runs_to_spans(runs, order)
        if not spans:
            return
        if len(spans) == 1:  # a small file: one scalar search, no arrays
            start, end = spans[0][0] << order, spans[0][1] << order
            if self.forbidden and self.forbidden.meets(start, end):
                self._in_scratch(start, end)
        else:
            starts = np.array([b0 for b0, _ in spans], dtype=np.int64)
            ends = np.array([b1 for _, b1 in spans], dtype=np.int64)
            self._refuse_forbidden(starts << order, ends << order, 0)
        for b0, b1 in spans:
            hit = self._overlap_range(order, b0, b1)
            if hit is not None:
                raise AlreadyPreserved(f"frame {hit:#x} is already preserved")
        for b0, b1 in spans:
            self.orders[order].assign_range(b0, b1, True)

    def remove_folio_runs(self, runs: list[tuple[int, int]], order: int) -> None:
        spans = self._runs_to_spans(runs, order)
        bitmap = self.orders[order]
        if not all(bitmap.all_set_in_range(b0, b1) for b0, b1 in spans):
            raise NotPreserved(f"a folio of order {order} in the runs was never preserved")
        for b0, b1 in spans:
            bitmap.assign_range(b0, b1, False)

    def add_folios(self, pfns: npt.ArrayLike, order: int) -> None:
        p, first, last = self._folio_runs(pfns, order)
        if not p.size:
            return
        bitmap = self.orders[order]
        if first is p:  # every folio stands for itself
            self._refuse_forbidden_folios(p, 1 << order)
        else:
            self._refuse_forbidden(first, last + (1 << order), 0)
        if first.size <= self.RANGE_PATH_MAX_RUNS:
            spans = list(
                zip((first >> order).tolist(), ((last >> order) + 1).tolist(), strict=True)
            )
            for b0, b1 in spans:
                hit = self._overlap_range(order, b0, b1)
                if hit is not None:
                    raise AlreadyPreserved(f"frame {hit:#x} is already preserved")
            for b0, b1 in spans:
                bitmap.assign_range(b0, b1, True)
            return
        blocks = p >> order if order else p
        hit = self._overlap(order, blocks)
        if hit is not None:
            raise AlreadyPreserved(f"frame {hit:#x} is already preserved")
        bitmap.assign(blocks, True)

    def remove_folios(self, pfns: npt.ArrayLike, order: int) -> None:
        p, first, last = self._folio_runs(pfns, order)
        bitmap = self.orders[order]
        if first.size <= self.RANGE_PATH_MAX_RUNS:
            spans = list(
                zip((first >> order).tolist(), ((last >> order) + 1).tolist(), strict=True)
            )
            if not all(bitmap.all_set_in_range(b0, b1) for b0, b1 in spans):
                raise NotPreserved(f"a folio of order {order} in the set was never preserved")
            for b0, b1 in spans:
                bitmap.assign_range(b0, b1, False)
            return
        blocks = p >> order
        if not bitmap.all_set(blocks):
            raise NotPreserved(f"a folio of order {order} in the set was never preserved")
        bitmap.assign(blocks, False)

    def add_pages(self, pfn: int, npages: int) -> list[tuple[int, int, int]]:
        if pfn < 0 or npages <= 0 or pfn + npages > self.frames:
            raise KernelError(f"pages [{pfn:#x}, {pfn + npages:#x}) outside RAM")
        runs = split_aligned(pfn, npages)
        self._refuse_forbidden(np.array([pfn]), np.array([pfn + npages]), 0)
        for order, b0, n in runs:
            hit = self._overlap_range(order, b0, b0 + n)
            if hit is not None:
                raise AlreadyPreserved(f"frame {hit:#x} is already preserved")
        for order, b0, n in runs:
            self.orders[order].assign_range(b0, b0 + n, True)
        return runs

    def remove_pages(self, pfn: int, npages: int) -> None:
        runs = split_aligned(pfn, npages)
        for order, b0, n in runs:
            if not self.orders[order].all_set_in_range(b0, b0 + n):
                raise NotPreserved(
                    f"pages [{pfn:#x}, {pfn + npages:#x}) were not preserved as one range"
                )
        for order, b0, n in runs:
            self.orders[order].assign_range(b0, b0 + n, False)

    # -- queries --------------------------------------------------------------------------

    def extents(self, exclude: PreservedSet | None = None) -> Extents:
        """Frames covered by preserved blocks (minus blocks also set in `exclude`)."""
        starts: list[Int64Array] = []
        ends: list[Int64Array] = []
        for m in self.orders:
            if m.count:
                first, end = m.runs(None if exclude is None else exclude.orders[m.order])
                if m.order:  # order 0: blocks are frames, no copy
                    first, end = first << m.order, end << m.order
                starts.append(first)
                ends.append(end)
        if not starts:
            return Extents.empty()
        if len(starts) == 1:  # one order's merged runs are already in normal form
            return Extents(starts[0], ends[0])
        return Extents.from_ranges(np.concatenate(starts), np.concatenate(ends))

    def folio_count(self) -> int:
        return sum(m.count for m in self.orders)

    def frame_count(self) -> int:
        return sum(m.count << m.order for m in self.orders)
