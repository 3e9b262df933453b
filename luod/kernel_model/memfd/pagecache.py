"""A memfd's page cache: which folio of emulated RAM backs each folio index of the file.

It owns the mechanics under the file's policy: filling holes with folios from the
allocator, dropping folios, zeroing cut bytes, and copying bytes between the caller and
RAM, one copy per run (runs are physically contiguous, see `runs`). Contents live in the
machine's RAM, addressed by pfn through `hw`.

Frames are metadata. A hole costs nothing; allocating a folio assigns frames (which the
allocator guarantees read as zero) and writes nothing; only `write` puts bytes in RAM.
Besides the invariants of `runs`:
- a folio that is not dirty reads as zero (it came zeroed from the allocator or from a
  restored record without user data, and nothing wrote to it);
- the file keeps bytes at or past its size zero in every folio (shrinking and punching
  call `zero_bytes` on the partial folio they cut).
Edits touch a window of runs: the runs overlapping the edited index range are clipped,
replaced, and merged with at most one neighbour on each side; the arrays are then rebuilt
by concatenation, a copy proportional to the number of runs, never to the number of folios.
"""

from __future__ import annotations

import numpy as np

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.memfd.runs import FolioRuns
from luod.kernel_model.mm import FolioSource


class PageCache:
    """Folio runs of one file, with folios of `order` from `mm`. Not thread-safe."""

    def __init__(self, memory: PhysicalMemory, mm: FolioSource, order: int) -> None:
        self.memory = memory
        self.mm = mm
        self.order = order
        self.runs = FolioRuns.empty()

    # -- geometry -------------------------------------------------------------------------

    @property
    def folio_size(self) -> int:
        return PAGE_SIZE << self.order

    @property
    def folio_shift(self) -> int:
        return PAGE_SHIFT + self.order

    def folios_covering(self, nbytes: int) -> int:
        """Number of folios needed to hold bytes [0, nbytes)."""
        return (nbytes + self.folio_size - 1) >> self.folio_shift

    def populated_folios(self) -> int:
        return int(self.runs.cnt.sum())

    # -- run edits ------------------------------------------------------------------------

    def _overlap(self, a: int, b: int) -> tuple[int, int]:
        """Run positions [k0, k1) of the runs sharing a folio index with [a, b)."""
        idx, cnt = self.runs.idx, self.runs.cnt
        k0 = int(np.searchsorted(idx, a, side="right")) - 1
        if k0 < 0 or int(idx[k0] + cnt[k0]) <= a:
            k0 += 1
        k1 = int(np.searchsorted(idx, b, side="left"))
        return k0, max(k0, k1)

    def _clipped(self, k0: int, k1: int, a: int, b: int) -> FolioRuns:
        """Runs k0..k1 cut down to the index range [a, b)."""
        part = self.runs.slice(k0, k1)
        start = np.maximum(part.idx, a)
        end = np.minimum(part.idx + part.cnt, b)
        pfn = part.pfn + ((start - part.idx) << self.order)
        return FolioRuns(start, pfn, end - start, part.dirty.copy())

    def _splice(self, a: int, b: int, middle: FolioRuns) -> None:
        """Make `middle` (sorted, inside [a, b)) the whole mapping of indices [a, b).

        Runs straddling a or b keep their outside parts. Only the window from one run
        before to one run after the edit can become mergeable, because the runs outside
        it were maximal and keep their outer bounds."""
        runs, order = self.runs, self.order
        k0, k1 = self._overlap(a, b)
        pieces: list[FolioRuns] = []
        if k1 > k0:
            first_idx = int(runs.idx[k0])
            if first_idx < a:  # the part of the first run before a stays
                pieces.append(
                    FolioRuns(
                        np.array([first_idx], dtype=np.int64),
                        runs.pfn[k0 : k0 + 1].copy(),
                        np.array([a - first_idx], dtype=np.int64),
                        runs.dirty[k0 : k0 + 1].copy(),
                    )
                )
        pieces.append(middle)
        if k1 > k0:
            last_idx = int(runs.idx[k1 - 1])
            last_end = last_idx + int(runs.cnt[k1 - 1])
            if last_end > b:  # the part of the last run past b stays
                pieces.append(
                    FolioRuns(
                        np.array([b], dtype=np.int64),
                        np.array(
                            [int(runs.pfn[k1 - 1]) + ((b - last_idx) << order)], dtype=np.int64
                        ),
                        np.array([last_end - b], dtype=np.int64),
                        runs.dirty[k1 - 1 : k1].copy(),
                    )
                )
        w0 = max(k0 - 1, 0)
        w1 = min(k1 + 1, runs.idx.size)
        window = FolioRuns.concat([runs.slice(w0, k0), *pieces, runs.slice(k1, w1)]).merged(order)
        n = runs.idx.size
        self.runs = FolioRuns.concat([runs.slice(0, w0), window, runs.slice(w1, n)])

    def populate(self, a: int, b: int, *, dirty: bool) -> int:
        """Give every hole of folio indices [a, b) a folio, in one allocator call; with
        `dirty`, mark all of [a, b) as holding user data. Returns the folios added.
        All or nothing: ENOMEM leaves the page cache untouched."""
        if b <= a:
            return 0
        if not self.runs.idx.size:  # an empty file (a new memfd): the holes are [a, b)
            alloc = self.mm.alloc_folio_runs(self.order, b - a)
            hole_idx, hole_cnt = np.array([a], dtype=np.int64), np.array([b - a], dtype=np.int64)
            filled = FolioRuns.placed(hole_idx, hole_cnt, alloc, self.order)
            self.runs = filled._replace(dirty=np.full(filled.idx.size, dirty)).merged(self.order)
            return b - a
        k0, k1 = self._overlap(a, b)
        present = self._clipped(k0, k1, a, b)
        hole_idx, hole_cnt = present.gaps(a, b)
        added = int(hole_cnt.sum())
        if not added and (not dirty or present.dirty.all()):
            return 0  # nothing to change: keep the runs as they are
        filled = FolioRuns.empty()
        if added:
            alloc = self.mm.alloc_folio_runs(self.order, added)
            filled = FolioRuns.placed(hole_idx, hole_cnt, alloc, self.order)
        middle = FolioRuns.concat([present, filled])
        if present.idx.size and filled.idx.size:
            middle = middle.take(np.argsort(middle.idx, kind="stable"))
        if dirty:
            middle = middle._replace(dirty=np.ones(middle.idx.size, dtype=np.bool_))
        self._splice(a, b, middle)
        return added

    def unmap(self, a: int, b: int) -> None:
        """Drop folio indices [a, b) from the page cache and free their frames (their
        contents are lost: a free frame holds no data)."""
        if b <= a:
            return
        k0, k1 = self._overlap(a, b)
        if k1 == k0:
            return
        gone = self._clipped(k0, k1, a, b)
        self._splice(a, b, FolioRuns.empty())
        self.mm.free_extents(gone.frames(self.order))

    def free_all(self) -> None:
        """Every folio back to its source (contents lost)."""
        frames = self.runs.frames(self.order)
        self.runs = FolioRuns.empty()
        self.mm.free_extents(frames)

    # -- zeroing ----------------------------------------------------------------------------

    def _folio_pfn(self, index: int) -> int | None:
        k = int(np.searchsorted(self.runs.idx, index, side="right")) - 1
        if k < 0 or index >= int(self.runs.idx[k] + self.runs.cnt[k]):
            return None
        return int(self.runs.pfn[k]) + ((index - int(self.runs.idx[k])) << self.order)

    def _zero_in_folio(self, index: int, lo: int, hi: int) -> None:
        """Zero bytes [lo, hi) of folio `index` (relative to the folio); a hole is zero
        already. Whole pages are punched (cheap, host memory returned); only the partial
        pages at the ends are written."""
        pfn = self._folio_pfn(index)
        if pfn is None or hi <= lo:
            return
        base = pfn << PAGE_SHIFT
        head_end = min(hi, -(-lo // PAGE_SIZE) * PAGE_SIZE)
        if head_end > lo:
            self.memory.write(base >> PAGE_SHIFT, bytes(head_end - lo), lo)
        mid_lo = head_end
        mid_hi = max(mid_lo, hi // PAGE_SIZE * PAGE_SIZE)
        if mid_hi > mid_lo:
            self.memory.zero(pfn + (mid_lo >> PAGE_SHIFT), (mid_hi - mid_lo) >> PAGE_SHIFT)
        if hi > mid_hi:
            self.memory.write(pfn, bytes(hi - mid_hi), mid_hi)

    def zero_bytes(self, start: int, end: int) -> None:
        """Zero file bytes [start, end), which lie within at most two partial folios (the
        ends of a punch or the tail cut by a shrink)."""
        fsize, shift = self.folio_size, self.folio_shift
        first, last = start >> shift, (end - 1) >> shift
        if first == last:
            self._zero_in_folio(first, start - (first << shift), end - (first << shift))
            return
        self._zero_in_folio(first, start - (first << shift), fsize)
        self._zero_in_folio(last, 0, end - (last << shift))

    def cut_beyond(self, size: int) -> None:
        """Free every folio wholly past `size` (including fallocate'd ones past the old
        EOF) and zero the rest of the folio `size` falls in."""
        if not self.runs.idx.size:
            return
        keep = self.folios_covering(size)
        last = int(self.runs.idx[-1] + self.runs.cnt[-1])
        self.unmap(keep, last)
        if size % self.folio_size:
            self.zero_bytes(size, keep << self.folio_shift)

    def punch(self, start: int, end: int) -> None:
        """Free the whole folios inside [start, end) and zero its partial ends."""
        shift = self.folio_shift
        whole_a = self.folios_covering(start)
        whole_b = end >> shift
        if whole_a < whole_b:
            self.unmap(whole_a, whole_b)
            if start < whole_a << shift:
                self.zero_bytes(start, whole_a << shift)
            if end > whole_b << shift:
                self.zero_bytes(whole_b << shift, end)
        else:  # no whole folio inside: zero within one folio or across two neighbours
            self.zero_bytes(start, end)

    # -- bytes ------------------------------------------------------------------------------

    def write(self, offset: int, view: memoryview) -> None:
        """Copy `view` to file offset `offset`, filling holes with new dirty folios first
        (the only step that can fail, ENOMEM, and then nothing changed)."""
        end = offset + view.nbytes
        shift = self.folio_shift
        a, b = offset >> shift, self.folios_covering(end)
        self.populate(a, b, dirty=True)
        # Every folio of [a, b) now exists and is dirty, and runs are maximal, so each run
        # here is one physically contiguous piece of RAM: one copy per run.
        k0, k1 = self._overlap(a, b)
        runs = self.runs.slice(k0, k1)
        for idx, pfn, cnt in zip(
            runs.idx.tolist(), runs.pfn.tolist(), runs.cnt.tolist(), strict=True
        ):
            lo = max(offset, idx << shift)
            hi = min(end, (idx + cnt) << shift)
            phys = (pfn << PAGE_SHIFT) + (lo - (idx << shift))
            self.memory.write(phys >> PAGE_SHIFT, view[lo - offset : hi - offset], phys % PAGE_SIZE)

    def read(self, offset: int, end: int) -> bytes:
        """File bytes [offset, end); holes read as zero without touching RAM (reading
        through `hw` never makes a hole resident)."""
        shift = self.folio_shift
        k0, k1 = self._overlap(offset >> shift, self.folios_covering(end))
        runs = self.runs.slice(k0, k1)
        # One pread per run, zeros for the gaps, then a single join: large reads are
        # bandwidth-bound, so every extra pass over the bytes counts.
        parts: list[bytes] = []
        cursor = offset
        for idx, pfn, cnt in zip(
            runs.idx.tolist(), runs.pfn.tolist(), runs.cnt.tolist(), strict=True
        ):
            lo = max(offset, idx << shift)
            hi = min(end, (idx + cnt) << shift)
            if lo > cursor:
                parts.append(bytes(lo - cursor))
            parts.append(self.memory.read_at((pfn << PAGE_SHIFT) + (lo - (idx << shift)), hi - lo))
            cursor = hi
        if end > cursor:
            parts.append(bytes(end - cursor))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def data_ranges(self, size: int) -> list[tuple[int, int]]:
        """(offset, length) of the file bytes below `size` whose frames hold data in RAM,
        in file order, adjacent ranges merged. A hole, a folio never written and a frame
        whose data was lost read as zero and are left out: copying only these ranges
        copies the file."""
        data = Extents(*self.memory.data_extents())
        order = self.order
        out: list[tuple[int, int]] = []
        for idx, pfn, n in zip(
            self.runs.idx.tolist(), self.runs.pfn.tolist(), self.runs.cnt.tolist(), strict=True
        ):
            for lo, hi in Extents.of(pfn, pfn + (n << order)) & data:
                start = ((idx << order) + lo - pfn) << PAGE_SHIFT
                end = min(start + ((hi - lo) << PAGE_SHIFT), size)
                if end <= start:
                    continue
                if out and out[-1][0] + out[-1][1] == start:
                    out[-1] = (out[-1][0], end - out[-1][0])
                else:
                    out.append((start, end - start))
        return out
