"""Sets of frame ranges, vectorised: the currency of the allocator and of KHO.

An `Extents` is a normalised set of half-open pfn ranges held as two sorted int64 arrays
(no overlap, no adjacency, no empty range). Union, difference and intersection cost
O((n + m) log(n + m)) in the number of ranges, never in the number of frames, so the same
code serves a 16 GiB and a 1 TiB machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]

_EMPTY: Int64Array = np.zeros(0, dtype=np.int64)


def _as_int64(values: npt.ArrayLike) -> Int64Array:
    return np.ascontiguousarray(values, dtype=np.int64).reshape(-1)


class Extents:
    __slots__ = ("_total", "ends", "starts")

    def __init__(self, starts: Int64Array, ends: Int64Array) -> None:
        """Takes arrays that are already normalised; use `from_ranges` otherwise. The
        arrays are the set's own from then on: a set is a value and never changes."""
        self.starts = starts
        self.ends = ends
        self._total: int | None = None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls) -> Extents:
        return cls(_EMPTY, _EMPTY)

    @classmethod
    def of(cls, start: int, end: int) -> Extents:
        if end <= start:
            return cls.empty()
        return cls(np.array([start], dtype=np.int64), np.array([end], dtype=np.int64))

    @classmethod
    def from_ranges(cls, starts: npt.ArrayLike, ends: npt.ArrayLike) -> Extents:
        """Normalise arbitrary (possibly overlapping, unsorted, empty) ranges."""
        s = _as_int64(starts)
        e = _as_int64(ends)
        keep = e > s
        if not keep.all():
            s, e = s[keep], e[keep]
        if s.size == 0:
            return cls.empty()
        if s.size == 1 or (s[1:] > e[:-1]).all():  # already sorted, disjoint, apart
            return cls(s, e)
        if s.size > 1 and not (s[1:] >= s[:-1]).all():
            order = np.argsort(s, kind="stable")
            s, e = s[order], e[order]
        reach = np.maximum.accumulate(e)
        # A range opens a new group when it starts after everything before it ended.
        opens = np.empty(s.size, dtype=bool)
        opens[0] = True
        opens[1:] = s[1:] > reach[:-1]
        first = np.flatnonzero(opens)
        last = np.append(first[1:] - 1, s.size - 1)
        return cls(s[first], reach[last])

    @classmethod
    def from_blocks(cls, blocks: npt.ArrayLike, order: int) -> Extents:
        """The frames covered by naturally aligned blocks of `1 << order` frames."""
        b = _as_int64(blocks)
        if b.size > 1 and (b[1:] > b[:-1]).all():
            first, last = block_runs(b)  # sorted and unique: runs in one pass
            return cls(first << order, (last + 1) << order)
        starts = b << order
        return cls.from_ranges(starts, starts + (1 << order))

    # -- queries ------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.starts.size)

    def __bool__(self) -> bool:
        return self.starts.size > 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts.tolist(), self.ends.tolist(), strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Extents):
            return NotImplemented
        return np.array_equal(self.starts, other.starts) and np.array_equal(self.ends, other.ends)

    def __hash__(self) -> int:
        return hash((self.starts.tobytes(), self.ends.tobytes()))

    def __repr__(self) -> str:
        shown = ", ".join(f"[{s:#x}, {e:#x})" for s, e in list(self)[:4])
        more = f", ... {len(self) - 4} more" if len(self) > 4 else ""
        return f"Extents({shown}{more})"

    def total(self) -> int:
        """Number of frames in the set (counted once: millions of ranges cost a pass)."""
        if self._total is None:
            self._total = int(self.ends.sum() - self.starts.sum())
        return self._total

    def contains(self, pfns: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per pfn: is it inside the set?"""
        p = _as_int64(pfns)
        k = np.searchsorted(self.starts, p, side="right") - 1
        inside = k >= 0
        inside[inside] = p[inside] < self.ends[k[inside]]
        return inside

    def overlaps_ranges(self, starts: npt.ArrayLike, ends: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per range [starts[i], ends[i]): does it share a frame with the set?"""
        s = _as_int64(starts)
        e = _as_int64(ends)
        # The last set range starting before e[i] overlaps iff it ends after s[i].
        k = np.searchsorted(self.starts, e, side="left") - 1
        hit = k >= 0
        hit[hit] = self.ends[k[hit]] > s[hit]
        return hit

    def meets(self, start: int, end: int) -> bool:
        """Does [start, end) share a frame with the set? (One binary search.)"""
        # Only the last range starting before `end` can: every earlier one ends before it.
        k = int(np.searchsorted(self.starts, end, side="left")) - 1
        return k >= 0 and end > start and int(self.ends[k]) > start

    def meets_sorted(self, starts: Int64Array, ends: Int64Array) -> int | None:
        """The index of the first range [starts[i], ends[i]) sharing a frame with the
        set, or None; the ranges must be sorted and disjoint. Costs O(len(self) log n): one
        binary search per range of the set, so checking millions of ranges against a few
        (scratch, say) reads none of them."""
        if not self or not starts.size:
            return None
        # For each set range, the first query range ending after its start overlaps it
        # iff that query range starts before the set range ends.
        k = np.searchsorted(ends, self.starts, side="right")
        inside = k < starts.size
        hit = np.zeros(k.size, dtype=np.bool_)
        hit[inside] = starts[k[inside]] < self.ends[inside]
        return int(k[hit].min()) if hit.any() else None

    def covers(self, start: int, end: int) -> bool:
        """Is every frame of [start, end) in the set?"""
        if end <= start:
            return True
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        return k >= 0 and int(self.ends[k]) >= end

    # -- algebra ------------------------------------------------------------------------

    def union(self, other: Extents) -> Extents:
        return _combine(self, other, "or")

    def intersection(self, other: Extents) -> Extents:
        return _combine(self, other, "and")

    def difference(self, other: Extents) -> Extents:
        return _combine(self, other, "sub")

    __or__ = union
    __and__ = intersection
    __sub__ = difference


def sorted_unique(values: npt.ArrayLike) -> Int64Array:
    """Sorted distinct values. np.unique's hash path is pathologically slow on large int
    arrays in numpy 2.x; sorting and comparing neighbours is linear after the sort."""
    v = np.sort(_as_int64(values), kind="stable")  # timsort: fast on presorted runs
    if v.size < 2:
        return v
    keep = np.empty(v.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(v[1:], v[:-1], out=keep[1:])
    return v[keep]


def block_runs(blocks: Int64Array) -> tuple[Int64Array, Int64Array]:
    """First and last block of each run of consecutive values in a sorted unique array."""
    if blocks.size == 0:
        return _EMPTY, _EMPTY
    breaks = np.flatnonzero(np.diff(blocks) != 1)
    first = blocks[np.concatenate(([0], breaks + 1))]
    last = blocks[np.concatenate((breaks, [blocks.size - 1]))]
    return first, last


# Below this many ranges a set counts as small: algebra with it clips the other side.
_SMALL = 64
_LO = np.iinfo(np.int64).min
_HI = np.iinfo(np.int64).max


def _clip(big: Extents, lo: Int64Array, hi: Int64Array) -> Extents:
    """`big` intersected with the few disjoint sorted windows [lo[i], hi[i])."""
    starts: list[Int64Array] = []
    ends: list[Int64Array] = []
    first = np.searchsorted(big.ends, lo, side="right")
    last = np.searchsorted(big.starts, hi, side="left")
    for i0, i1, w0, w1 in zip(first.tolist(), last.tolist(), lo.tolist(), hi.tolist(), strict=True):
        if i1 > i0:
            starts.append(np.maximum(big.starts[i0:i1], w0))
            ends.append(np.minimum(big.ends[i0:i1], w1))
    if not starts:
        return Extents.empty()
    # Pieces of a normal set clipped to disjoint, non-adjacent windows: still normal.
    return Extents(np.concatenate(starts), np.concatenate(ends))


def _complement(small: Extents) -> tuple[Int64Array, Int64Array]:
    lo = np.concatenate(([_LO], small.ends))
    hi = np.concatenate((small.starts, [_HI]))
    return lo, hi


def _sweep(a: Extents, b: Extents, op: Literal["or", "and", "sub"]) -> Extents:
    """General case: one pass over all boundaries in order, counting coverage."""
    na, nb = a.starts.size, b.starts.size
    points = np.concatenate((a.starts, a.ends, b.starts, b.ends))
    step_a = np.concatenate(
        (np.ones(na, np.int8), -np.ones(na, np.int8), np.zeros(2 * nb, np.int8))
    )
    step_b = np.concatenate(
        (np.zeros(2 * na, np.int8), np.ones(nb, np.int8), -np.ones(nb, np.int8))
    )
    order = np.argsort(points, kind="stable")  # merges four sorted runs: near linear
    points = points[order]
    in_a = np.cumsum(step_a[order], dtype=np.int32) > 0
    in_b = np.cumsum(step_b[order], dtype=np.int32) > 0
    # the state after the last event at each distinct point holds until the next point
    last = np.empty(points.size, dtype=np.bool_)
    last[-1] = True
    np.not_equal(points[1:], points[:-1], out=last[:-1])
    points, in_a, in_b = points[last], in_a[last], in_b[last]
    if op == "or":
        keep = in_a | in_b
    elif op == "and":
        keep = in_a & in_b
    else:
        keep = in_a & ~in_b
    keep = keep[:-1]
    return Extents.from_ranges(points[:-1][keep], points[1:][keep])


def _subtract_from_small(small: Extents, big: Extents) -> Extents:
    """Each range of `small` minus the pieces of `big` inside it: the gaps between those
    pieces, which come out sorted (no sort, so linear in the pieces: a few free ranges
    minus millions of preserved ones costs a few passes over them)."""
    first = np.searchsorted(big.ends, small.starts, side="right")
    last = np.searchsorted(big.starts, small.ends, side="left")
    los: list[Int64Array] = []
    his: list[Int64Array] = []
    for i0, i1, w0, w1 in zip(
        first.tolist(), last.tolist(), small.starts.tolist(), small.ends.tolist(), strict=True
    ):
        n = max(i1 - i0, 0)
        lo = np.empty(n + 1, dtype=np.int64)
        hi = np.empty(n + 1, dtype=np.int64)
        lo[0], hi[n] = w0, w1
        if n:
            lo[1:] = big.ends[i0:i1]
            hi[:n] = big.starts[i0:i1]
            # only the first and last piece can stick out of the window
            hi[0] = max(int(hi[0]), w0)
            lo[n] = min(int(lo[n]), w1)
        los.append(lo)
        his.append(hi)
    # One window (free RAM minus millions of preserved ranges, at boot) needs no copy.
    lo_all = los[0] if len(los) == 1 else np.concatenate(los)
    hi_all = his[0] if len(his) == 1 else np.concatenate(his)
    keep = hi_all > lo_all
    if keep.all():
        return Extents(lo_all, hi_all)
    return Extents(lo_all[keep], hi_all[keep])


def _combine(a: Extents, b: Extents, op: Literal["or", "and", "sub"]) -> Extents:
    if op == "or":
        if not b:
            return a
        if not a:
            return b
        return _sweep(a, b, op)
    if op == "and":
        if not a or not b:
            return Extents.empty()
        if len(b) <= _SMALL:
            return _clip(a, b.starts, b.ends)
        if len(a) <= _SMALL:
            return _clip(b, a.starts, a.ends)
        return _sweep(a, b, op)
    if not a or not b:
        return a
    if len(b) <= _SMALL:
        return _clip(a, *_complement(b))
    if len(a) <= _SMALL:
        return _subtract_from_small(a, b)
    return _sweep(a, b, op)
