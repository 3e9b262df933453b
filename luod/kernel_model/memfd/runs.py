"""Folio runs: the representation of a memfd's page cache, and the arithmetic on it.

A page cache is kept as runs, never as a Python object per page: a 1 TiB memfd with a few
pages written holds a few runs, and a fully populated 64 GiB memfd of 4 KiB folios (16M
folios) holds as many runs as the allocator handed out contiguous pieces.

`FolioRuns` is four parallel numpy arrays, sorted by folio index -- `idx` (first folio
index of the run), `pfn` (pfn of its first folio), `cnt` (folios in the run) and `dirty`
(the run's folios hold user data). A run maps indices [idx, idx + cnt) to folios pfn,
pfn + 2**order, ... Invariants of a page cache's runs, kept by every operation:
- runs are non-empty, sorted by `idx` and do not overlap;
- runs are maximal: two neighbours are never contiguous in index *and* in pfn *and* equal
  in `dirty` (so the representation of a page cache is unique, and every run is one
  physically contiguous piece of RAM: one `memory.write` / `memory.read_at` per run).
Everything here is vectorised: no Python loop over folios.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from luod.kernel_model.extents import Extents, Int64Array, sorted_unique

BoolArray = npt.NDArray[np.bool_]

_EMPTY_I64: Int64Array = np.zeros(0, dtype=np.int64)
_EMPTY_BOOL: BoolArray = np.zeros(0, dtype=np.bool_)


class FolioRuns(NamedTuple):
    """Runs of consecutive folio indices mapped to consecutive folios (see module doc)."""

    idx: Int64Array
    pfn: Int64Array
    cnt: Int64Array
    dirty: BoolArray

    @classmethod
    def empty(cls) -> FolioRuns:
        return cls(_EMPTY_I64, _EMPTY_I64, _EMPTY_I64, _EMPTY_BOOL)

    @classmethod
    def single(cls, idx: int, pfn: int, cnt: int, *, dirty: bool) -> FolioRuns:
        return cls(
            np.array([idx], dtype=np.int64),
            np.array([pfn], dtype=np.int64),
            np.array([cnt], dtype=np.int64),
            np.array([dirty], dtype=np.bool_),
        )

    @classmethod
    def concat(cls, parts: list[FolioRuns]) -> FolioRuns:
        parts = [p for p in parts if p.idx.size]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([p.idx for p in parts]),
            np.concatenate([p.pfn for p in parts]),
            np.concatenate([p.cnt for p in parts]),
            np.concatenate([p.dirty for p in parts]),
        )

    @classmethod
    def of_folios(cls, idx: Int64Array, pfn: Int64Array, dirty: BoolArray, order: int) -> FolioRuns:
        """Maximal runs of folios given one entry per folio, sorted by unique index."""
        step = 1 << order
        breaks = np.flatnonzero(
            (np.diff(idx) != 1) | (np.diff(pfn) != step) | (dirty[1:] != dirty[:-1])
        )
        heads = np.concatenate(([0], breaks + 1))
        cnt = np.diff(np.concatenate((heads, [idx.size]))).astype(np.int64)
        return cls(idx[heads], pfn[heads], cnt, dirty[heads]).merged(order)

    def slice(self, lo: int, hi: int) -> FolioRuns:
        return FolioRuns(self.idx[lo:hi], self.pfn[lo:hi], self.cnt[lo:hi], self.dirty[lo:hi])

    def take(self, which: npt.NDArray[np.intp]) -> FolioRuns:
        return FolioRuns(self.idx[which], self.pfn[which], self.cnt[which], self.dirty[which])

    def merged(self, order: int) -> FolioRuns:
        """Drop empty runs and join neighbours contiguous in index, pfn and dirtiness.
        Expects runs sorted by index and disjoint."""
        runs = self
        if (runs.cnt <= 0).any():
            runs = runs.take(np.flatnonzero(runs.cnt > 0))
        if runs.idx.size < 2:
            return runs
        end_idx = runs.idx[:-1] + runs.cnt[:-1]
        end_pfn = runs.pfn[:-1] + (runs.cnt[:-1] << order)
        join = (
            (end_idx == runs.idx[1:])
            & (end_pfn == runs.pfn[1:])
            & (runs.dirty[:-1] == runs.dirty[1:])
        )
        if not join.any():
            return runs
        heads = np.flatnonzero(np.concatenate(([True], ~join)))
        return FolioRuns(
            runs.idx[heads],
            runs.pfn[heads],
            np.add.reduceat(runs.cnt, heads),
            runs.dirty[heads],
        )

    def frames(self, order: int) -> Extents:
        """The RAM frames these runs hold."""
        return Extents.from_ranges(self.pfn, self.pfn + (self.cnt << order))

    def gaps(self, a: int, b: int) -> tuple[Int64Array, Int64Array]:
        """Holes of [a, b) not covered by these runs (sorted, clipped to [a, b)): the
        first index and length of each."""
        lo = np.concatenate(([a], self.idx + self.cnt))
        hi = np.concatenate((self.idx, [b]))
        keep = hi > lo
        return lo[keep].astype(np.int64), (hi - lo)[keep].astype(np.int64)

    @classmethod
    def placed(
        cls,
        hole_idx: Int64Array,
        hole_cnt: Int64Array,
        alloc: list[tuple[int, int]],
        order: int,
    ) -> FolioRuns:
        """Map the holes, in index order, onto the allocated folio runs, in order; the
        result is clean (no user data yet).

        Both are runs over one sequence of `hole_cnt.sum()` folios; cutting that sequence
        at every boundary of either gives pieces that lie in one hole and one allocated run
        each, so the result has at most len(holes) + len(alloc) runs."""
        if hole_idx.size == 1 and len(alloc) == 1:  # the common small write: one run
            return cls.single(int(hole_idx[0]), alloc[0][0], alloc[0][1], dirty=False)
        alloc_pfn = np.array([p for p, _ in alloc], dtype=np.int64)
        alloc_cnt = np.array([n for _, n in alloc], dtype=np.int64)
        hole_end = np.cumsum(hole_cnt)
        alloc_end = np.cumsum(alloc_cnt)
        cuts = sorted_unique(np.concatenate(([0], hole_end, alloc_end)))
        at, length = cuts[:-1], np.diff(cuts)
        h = np.searchsorted(hole_end, at, side="right")
        j = np.searchsorted(alloc_end, at, side="right")
        idx = hole_idx[h] + (at - (hole_end - hole_cnt)[h])
        pfn = alloc_pfn[j] + ((at - (alloc_end - alloc_cnt)[j]) << order)
        return cls(
            idx.astype(np.int64),
            pfn.astype(np.int64),
            length.astype(np.int64),
            np.zeros(at.size, dtype=np.bool_),
        )


def expand_runs(
    idx: Int64Array, pfn: Int64Array, cnt: Int64Array, dirty: BoolArray, order: int
) -> tuple[Int64Array, Int64Array, BoolArray]:
    """Runs (first folio index, first pfn, folios, dirty) to one entry per folio:
    (index, pfn, dirty), in the runs' order."""
    total = int(cnt.sum())
    if not total:
        return _EMPTY_I64.copy(), _EMPTY_I64.copy(), _EMPTY_BOOL.copy()
    # A folio's index is its position in the expansion plus its run's (idx - start of the
    # run in the expansion); its pfn is linear in its index within the run.
    run_start = np.cumsum(cnt) - cnt
    indices = np.arange(total, dtype=np.int64) + np.repeat(idx - run_start, cnt)
    pfns = np.repeat(pfn - (idx << order), cnt) + (indices << order)
    return indices, pfns, np.repeat(dirty, cnt)
