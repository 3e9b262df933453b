"""One order's preserved-block bitmap, in chunks created on first use.

KHO keeps one bitmap per order; this model never keeps a Python object per page: a bitmap
is split into in-memory chunks of 2**18 blocks held as numpy bool arrays, created when a
block in them is first set and dropped when their last block is cleared, so cost grows
with what is preserved. The wire formats (`kho-v1` bitmaps, `kho-v2` radix tree) are cut
from these chunks by their writers, which is why the chunk geometry is public.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from luod.kernel_model.extents import Int64Array, sorted_unique

CHUNK_SHIFT = 18
CHUNK_BLOCKS = 1 << CHUNK_SHIFT
BoolArray = npt.NDArray[np.bool_]


class OrderBitmap:
    """Preserved blocks of one order."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.count = 0
        self._chunks: dict[int, BoolArray] = {}

    @staticmethod
    def _groups(blocks: Int64Array) -> Iterator[tuple[int, Int64Array]]:
        """(chunk id, offsets in chunk) for a sorted block array."""
        if blocks.size == 0:
            return
        first, last = int(blocks[0]) >> CHUNK_SHIFT, int(blocks[-1]) >> CHUNK_SHIFT
        edges = np.arange(first + 1, last + 1, dtype=np.int64) << CHUNK_SHIFT
        cuts = np.searchsorted(blocks, edges).tolist()
        for lo, hi in zip([0, *cuts], [*cuts, blocks.size], strict=True):
            if hi > lo:
                part = blocks[lo:hi]
                yield int(part[0]) >> CHUNK_SHIFT, part & (CHUNK_BLOCKS - 1)

    @staticmethod
    def _spans(b0: int, b1: int) -> Iterator[tuple[int, int, int]]:
        """(chunk id, lo, hi) offsets covering blocks [b0, b1)."""
        while b0 < b1:
            cid = b0 >> CHUNK_SHIFT
            hi = min(b1, (cid + 1) << CHUNK_SHIFT)
            yield cid, b0 & (CHUNK_BLOCKS - 1), hi - (cid << CHUNK_SHIFT)
            b0 = hi

    def first_set(self, blocks: Int64Array) -> int | None:
        """The first of the sorted `blocks` that is set, or None."""
        for cid, off in self._groups(blocks):
            chunk = self._chunks.get(cid)
            if chunk is not None:
                hit = np.flatnonzero(chunk[off])
                if hit.size:
                    return (cid << CHUNK_SHIFT) + int(off[hit[0]])
        return None

    def first_set_in_range(self, b0: int, b1: int) -> int | None:
        for cid, lo, hi in self._spans(b0, b1):
            chunk = self._chunks.get(cid)
            if chunk is not None:
                hit = np.flatnonzero(chunk[lo:hi])
                if hit.size:
                    return (cid << CHUNK_SHIFT) + lo + int(hit[0])
        return None

    def test(self, blocks: Int64Array) -> BoolArray:
        """Per block of a sorted array: is it set?"""
        out = np.zeros(blocks.size, dtype=np.bool_)
        pos = 0
        for cid, off in self._groups(blocks):
            chunk = self._chunks.get(cid)
            if chunk is not None:
                out[pos : pos + off.size] = chunk[off]
            pos += off.size
        return out

    def all_set(self, blocks: Int64Array) -> bool:
        for cid, off in self._groups(blocks):
            chunk = self._chunks.get(cid)
            if chunk is None or not chunk[off].all():
                return False
        return True

    def all_set_in_range(self, b0: int, b1: int) -> bool:
        for cid, lo, hi in self._spans(b0, b1):
            chunk = self._chunks.get(cid)
            if chunk is None or not chunk[lo:hi].all():
                return False
        return True

    def _chunk(self, cid: int) -> BoolArray:
        chunk = self._chunks.get(cid)
        if chunk is None:
            chunk = self._chunks[cid] = np.zeros(CHUNK_BLOCKS, dtype=np.bool_)
        return chunk

    def assign(self, blocks: Int64Array, value: bool) -> None:
        """Set or clear sorted unique blocks (caller checked their current state)."""
        for cid, off in self._groups(blocks):
            self._chunk(cid)[off] = value
            self._drop_if_empty(cid, value)
        self.count += blocks.size if value else -blocks.size

    def assign_range(self, b0: int, b1: int, value: bool) -> None:
        for cid, lo, hi in self._spans(b0, b1):
            self._chunk(cid)[lo:hi] = value
            self._drop_if_empty(cid, value)
        self.count += (b1 - b0) if value else -(b1 - b0)

    def _drop_if_empty(self, cid: int, value: bool) -> None:
        if not value and not self._chunks[cid].any():
            del self._chunks[cid]

    def chunks(self) -> Iterator[tuple[int, BoolArray]]:
        """(chunk id, bool array of CHUNK_BLOCKS), in chunk order."""
        for cid in sorted(self._chunks):
            yield cid, self._chunks[cid]

    def runs(self, exclude: OrderBitmap | None = None) -> tuple[Int64Array, Int64Array]:
        """Runs of set blocks (first, end) in block units, minus blocks set in `exclude`."""
        padded = np.zeros(CHUNK_BLOCKS + 2, dtype=np.bool_)  # a clear block on either side
        changed = np.empty(CHUNK_BLOCKS + 1, dtype=np.bool_)

        def edges_of(cid: int, chunk: BoolArray) -> BoolArray:
            other = None if exclude is None else exclude._chunks.get(cid)
            if other is None:
                padded[1:-1] = chunk
            else:
                np.greater(chunk, other, out=padded[1:-1])  # chunk & ~other
            # Edges alternate: a run opens, closes, opens... so one scan finds both.
            return np.not_equal(padded[1:], padded[:-1], out=changed)

        # Two passes, counting and then filling, so that millions of runs are written once
        # into arrays of their final size: no per-chunk pieces to join (fresh memory is
        # what costs here, every page of it faulted in).
        chunks = list(self.chunks())
        total = sum(int(np.count_nonzero(edges_of(cid, c))) for cid, c in chunks) // 2
        firsts = np.empty(total, dtype=np.int64)
        ends = np.empty(total, dtype=np.int64)
        n = 0
        for cid, chunk in chunks:
            # a bool scan, since numpy's nonzero is several times faster on bools
            edges = np.flatnonzero(edges_of(cid, chunk))
            edges += cid << CHUNK_SHIFT
            k = edges.size // 2
            if n and k and ends[n - 1] == edges[0]:
                # a run cut by the chunk boundary: join its two halves
                ends[n - 1 : n - 1 + k] = edges[1::2]
                firsts[n : n + k - 1] = edges[2::2]
                n += k - 1
            else:
                firsts[n : n + k] = edges[0::2]
                ends[n : n + k] = edges[1::2]
                n += k
        return firsts[:n], ends[:n]

    def load(self, first_blocks: Int64Array, bits: BoolArray) -> None:
        """Set blocks from bitmaps: row i of `bits` covers blocks first_blocks[i] + j.
        Rows must not overlap each other (the reader checked)."""
        width = bits.shape[1]
        for cid in sorted_unique(first_blocks >> CHUNK_SHIFT).tolist():
            chunk = self._chunk(cid)
            rows = np.flatnonzero((first_blocks >> CHUNK_SHIFT) == cid)
            offsets = (first_blocks[rows] & (CHUNK_BLOCKS - 1)) // width
            chunk.reshape(-1, width)[offsets] = bits[rows]
            self._drop_if_empty(cid, False)
        self.count = sum(int(np.count_nonzero(c)) for c in self._chunks.values())

    def blocks(self) -> Int64Array:
        parts = [
            (cid << CHUNK_SHIFT) + np.flatnonzero(chunk).astype(np.int64)
            for cid, chunk in self.chunks()
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
