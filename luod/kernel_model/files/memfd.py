"""An emulated memfd: anonymous shared memory whose folios are frames of emulated RAM.

This module owns the memfd's page cache, size, file offset and seals, and the
`SHMEM_F_MAPPING_FROZEN` flag the live-update handler sets while the file is preserved
(reference §4.1, §8 item 12). Contents live in the machine's RAM, addressed by pfn through
`hw`, so that what a kexec keeps or loses is exactly what KHO preserved: after a kexec
nothing of this object survives except the frames and the handler's records, from which
`adopt` rebuilds a fresh memfd. `HugetlbMemfdFile` is the MFD_HUGETLB variant, which is
not shmem and which live update therefore refuses.

Frames are metadata. A hole costs nothing; allocating a folio assigns frames (which the
allocator guarantees read as zero) and writes nothing; only `write` puts bytes in RAM. The
page cache is therefore kept as runs, never as a Python object per page: a 1 TiB memfd with
a few pages written holds a few runs, and a fully populated 64 GiB memfd of 4 KiB folios
(16M folios) holds as many runs as the allocator handed out contiguous pieces.

Representation (`_Runs`): four parallel numpy arrays, sorted by folio index --
`idx` (first folio index of the run), `pfn` (pfn of its first folio), `cnt` (folios in the
run) and `dirty` (the run's folios hold user data). A run maps indices
[idx, idx + cnt) to folios pfn, pfn + 2**order, ... Invariants, kept by every operation:
- runs are non-empty, sorted by `idx` and do not overlap;
- runs are maximal: two neighbours are never contiguous in index *and* in pfn *and* equal
  in `dirty` (so the representation of a page cache is unique, and every run is one
  physically contiguous piece of RAM: one `memory.write` / `memory.read_at` per run);
- a folio that is not dirty reads as zero (it came zeroed from the allocator or from a
  restored record without user data, and nothing wrote to it);
- bytes at or past `size` read as zero in every folio (shrinking and punching zero the
  partial folio they cut), so growing the file exposes zeros, as Linux guarantees;
- folios may lie past EOF only through `fallocate(keep_size=True)`, as in shmem.
Edits touch a window of runs: the runs overlapping the edited index range are clipped,
replaced, and merged with at most one neighbour on each side; the arrays are then rebuilt
by concatenation, a copy proportional to the number of runs, never to the number of folios.

Deliberate simplifications (documented so the handler can rely on them):
- `write` and `read` are pwrite/pread: they take an offset and leave `pos` alone;
- a write that would cross EOF under F_SEAL_GROW or a frozen mapping fails whole (EPERM)
  where Linux may first write the pages that fit;
- `fallocate(punch_hole=True)` implies FALLOC_FL_KEEP_SIZE (Linux refuses a punch without
  it with EOPNOTSUPP);
- sizes beyond Linux's MAX_LFS_FILESIZE fail EINVAL (Linux: EFBIG, not in the errno table);
- the F_SEAL_EXEC-implies-write-seals rule of executable memfds is not modelled (no modes).
"""

from __future__ import annotations

import enum
import errno
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import KernelError
from luod.kernel_model.extents import Extents, Int64Array, sorted_unique
from luod.kernel_model.files.base import File
from luod.kernel_model.mm import MAX_ORDER, FolioSource

BoolArray = npt.NDArray[np.bool_]

# Linux's MAX_LFS_FILESIZE on 64-bit: the largest size/offset shmem accepts. Byte
# arithmetic is done on Python ints; numpy only ever sees folio indices (< 2**51).
MAX_FILE_SIZE = (1 << 63) - 1


class Seal(enum.Flag):
    """memfd seals, with Linux's F_SEAL_* values (include/uapi/linux/fcntl.h)."""

    SEAL = 0x1
    SHRINK = 0x2
    GROW = 0x4
    WRITE = 0x8
    FUTURE_WRITE = 0x10
    EXEC = 0x20

    @classmethod
    def from_names(cls, names: list[str]) -> Seal:
        """Seals named in lowercase (`["grow", "shrink"]`); unknown names fail EINVAL."""
        out = cls(0)
        for name in names:
            member = _SEAL_BY_NAME.get(name)
            if member is None:
                known = ", ".join(_SEAL_BY_NAME)
                raise KernelError(
                    f"unknown memfd seal {name!r} (known: {known})", errno=errno.EINVAL
                )
            out |= member
        return out

    def names(self) -> list[str]:
        """Lowercase names of the seals set, in bit order."""
        return [name for name, member in _SEAL_BY_NAME.items() if member in self]


_SEAL_BY_NAME: dict[str, Seal] = {m.name.lower(): m for m in Seal if m.name is not None}

_EMPTY_I64: Int64Array = np.zeros(0, dtype=np.int64)
_EMPTY_BOOL: BoolArray = np.zeros(0, dtype=np.bool_)


class _Runs(NamedTuple):
    """Runs of consecutive folio indices mapped to consecutive folios (see module doc)."""

    idx: Int64Array
    pfn: Int64Array
    cnt: Int64Array
    dirty: BoolArray

    @classmethod
    def empty(cls) -> _Runs:
        return cls(_EMPTY_I64, _EMPTY_I64, _EMPTY_I64, _EMPTY_BOOL)

    @classmethod
    def concat(cls, parts: list[_Runs]) -> _Runs:
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

    def slice(self, lo: int, hi: int) -> _Runs:
        return _Runs(self.idx[lo:hi], self.pfn[lo:hi], self.cnt[lo:hi], self.dirty[lo:hi])

    def take(self, which: npt.NDArray[np.intp]) -> _Runs:
        return _Runs(self.idx[which], self.pfn[which], self.cnt[which], self.dirty[which])

    def merged(self, order: int) -> _Runs:
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
        return _Runs(
            runs.idx[heads],
            runs.pfn[heads],
            np.add.reduceat(runs.cnt, heads),
            runs.dirty[heads],
        )

    def frames(self, order: int) -> Extents:
        """The RAM frames these runs hold."""
        return Extents.from_ranges(self.pfn, self.pfn + (self.cnt << order))


def expand_runs(
    idx: Int64Array, pfn: Int64Array, cnt: Int64Array, dirty: BoolArray, order: int
) -> tuple[Int64Array, Int64Array, BoolArray]:
    """Runs (first folio index, first pfn, folios, dirty) to one entry per folio:
    (index, pfn, dirty), in the runs' order. Vectorised: no Python loop over folios."""
    total = int(cnt.sum())
    if not total:
        return _EMPTY_I64.copy(), _EMPTY_I64.copy(), _EMPTY_BOOL.copy()
    # A folio's index is its position in the expansion plus its run's (idx - start of the
    # run in the expansion); its pfn is linear in its index within the run.
    run_start = np.cumsum(cnt) - cnt
    indices = np.arange(total, dtype=np.int64) + np.repeat(idx - run_start, cnt)
    pfns = np.repeat(pfn - (idx << order), cnt) + (indices << order)
    return indices, pfns, np.repeat(dirty, cnt)


class MemfdFile(File):
    """A shmem-backed memfd in emulated RAM. Not thread-safe; the daemon serialises."""

    file_type = "memfd"

    def __init__(
        self,
        memory: PhysicalMemory,
        mm: FolioSource,
        *,
        name: str = "",
        folio_order: int = 0,
        allow_sealing: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= folio_order <= MAX_ORDER:
            raise KernelError(
                f"memfd folio order {folio_order} outside 0..{MAX_ORDER}", errno=errno.EINVAL
            )
        self.memory = memory
        self.mm = mm
        self.name = name
        self.folio_order = folio_order
        self.allow_sealing = allow_sealing
        self.size = 0
        self.pos = 0
        # Like Linux: a memfd created without MFD_ALLOW_SEALING starts with F_SEAL_SEAL, so
        # F_GET_SEALS reports it and F_ADD_SEALS fails EPERM.
        self.seals = Seal(0) if allow_sealing else Seal.SEAL
        # SHMEM_F_MAPPING_FROZEN: set while preserved. No size change, no fallocate, no
        # punch; writes inside the size still work (the preserved folios are pinned).
        self.mapping_frozen = False
        self._runs = _Runs.empty()
        self._released = False

    # -- geometry -------------------------------------------------------------------------

    @property
    def folio_size(self) -> int:
        """Bytes per folio."""
        return PAGE_SIZE << self.folio_order

    @property
    def _folio_shift(self) -> int:
        return PAGE_SHIFT + self.folio_order

    def _folios_covering(self, nbytes: int) -> int:
        """Number of folios needed to hold bytes [0, nbytes)."""
        return (nbytes + self.folio_size - 1) >> self._folio_shift

    # -- identity and errors -----------------------------------------------------------------

    def describe(self) -> str:
        return f'{self.file_type} "{self.name}" (inode {self.inode})'

    def _error(self, cause: str, code: int) -> KernelError:
        return KernelError(f"{self.describe()}: {cause}", errno=code, obj=self.describe())

    def _check_live(self) -> None:
        if self._released:
            raise self._error("file has been released", errno.EBADF)

    def _check_range(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0:
            raise self._error(f"{what} at offset {offset} length {length}", errno.EINVAL)
        if offset + length > MAX_FILE_SIZE:
            raise self._error(f"{what} ends past the maximum file size", errno.EINVAL)

    # -- page-cache primitives -----------------------------------------------------------------

    def _overlap(self, a: int, b: int) -> tuple[int, int]:
        """Run positions [k0, k1) of the runs sharing a folio index with [a, b)."""
        idx, cnt = self._runs.idx, self._runs.cnt
        k0 = int(np.searchsorted(idx, a, side="right")) - 1
        if k0 < 0 or int(idx[k0] + cnt[k0]) <= a:
            k0 += 1
        k1 = int(np.searchsorted(idx, b, side="left"))
        return k0, max(k0, k1)

    def _clipped(self, k0: int, k1: int, a: int, b: int) -> _Runs:
        """Runs k0..k1 cut down to the index range [a, b)."""
        part = self._runs.slice(k0, k1)
        start = np.maximum(part.idx, a)
        end = np.minimum(part.idx + part.cnt, b)
        pfn = part.pfn + ((start - part.idx) << self.folio_order)
        return _Runs(start, pfn, end - start, part.dirty.copy())

    def _splice(self, a: int, b: int, middle: _Runs) -> None:
        """Make `middle` (sorted, inside [a, b)) the whole mapping of indices [a, b).

        Runs straddling a or b keep their outside parts. Only the window from one run
        before to one run after the edit can become mergeable, because the runs outside
        it were maximal and keep their outer bounds."""
        runs, order = self._runs, self.folio_order
        k0, k1 = self._overlap(a, b)
        pieces: list[_Runs] = []
        if k1 > k0:
            first_idx = int(runs.idx[k0])
            if first_idx < a:  # the part of the first run before a stays
                pieces.append(
                    _Runs(
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
                    _Runs(
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
        window = _Runs.concat([runs.slice(w0, k0), *pieces, runs.slice(k1, w1)]).merged(order)
        n = runs.idx.size
        self._runs = _Runs.concat([runs.slice(0, w0), window, runs.slice(w1, n)])

    @staticmethod
    def _gaps(present: _Runs, a: int, b: int) -> tuple[Int64Array, Int64Array]:
        """Holes of [a, b) not covered by `present` (sorted, clipped to [a, b)): the
        first index and length of each."""
        lo = np.concatenate(([a], present.idx + present.cnt))
        hi = np.concatenate((present.idx, [b]))
        keep = hi > lo
        return lo[keep].astype(np.int64), (hi - lo)[keep].astype(np.int64)

    def _place(
        self, hole_idx: Int64Array, hole_cnt: Int64Array, alloc: list[tuple[int, int]]
    ) -> _Runs:
        """Map the holes, in index order, onto the allocated folio runs, in order.

        Both are runs over one sequence of `hole_cnt.sum()` folios; cutting that sequence
        at every boundary of either gives pieces that lie in one hole and one allocated run
        each, so the result has at most len(holes) + len(alloc) runs."""
        order = self.folio_order
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
        return _Runs(
            idx.astype(np.int64),
            pfn.astype(np.int64),
            length.astype(np.int64),
            np.zeros(at.size, dtype=np.bool_),
        )

    def _populate(self, a: int, b: int, *, dirty: bool) -> int:
        """Give every hole of folio indices [a, b) a folio, in one allocator call; with
        `dirty`, mark all of [a, b) as holding user data. Returns the folios added.
        All or nothing: ENOMEM leaves the page cache untouched."""
        if b <= a:
            return 0
        k0, k1 = self._overlap(a, b)
        present = self._clipped(k0, k1, a, b)
        hole_idx, hole_cnt = self._gaps(present, a, b)
        added = int(hole_cnt.sum())
        if not added and (not dirty or present.dirty.all()):
            return 0  # nothing to change: keep the runs as they are
        filled = _Runs.empty()
        if added:
            filled = self._place(
                hole_idx, hole_cnt, self.mm.alloc_folio_runs(self.folio_order, added)
            )
        middle = _Runs.concat([present, filled])
        if present.idx.size and filled.idx.size:
            middle = middle.take(np.argsort(middle.idx, kind="stable"))
        if dirty:
            middle = middle._replace(dirty=np.ones(middle.idx.size, dtype=np.bool_))
        self._splice(a, b, middle)
        return added

    def _unmap(self, a: int, b: int) -> None:
        """Drop folio indices [a, b) from the page cache and free their frames (their
        contents are lost: a free frame holds no data)."""
        if b <= a:
            return
        k0, k1 = self._overlap(a, b)
        if k1 == k0:
            return
        gone = self._clipped(k0, k1, a, b)
        self._splice(a, b, _Runs.empty())
        self.mm.free_extents(gone.frames(self.folio_order))

    def _folio_pfn(self, index: int) -> int | None:
        k = int(np.searchsorted(self._runs.idx, index, side="right")) - 1
        if k < 0 or index >= int(self._runs.idx[k] + self._runs.cnt[k]):
            return None
        return int(self._runs.pfn[k]) + ((index - int(self._runs.idx[k])) << self.folio_order)

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

    def _zero_bytes(self, start: int, end: int) -> None:
        """Zero file bytes [start, end), which lie within at most two partial folios (the
        ends of a punch or the tail cut by a shrink)."""
        fsize, shift = self.folio_size, self._folio_shift
        first, last = start >> shift, (end - 1) >> shift
        if first == last:
            self._zero_in_folio(first, start - (first << shift), end - (first << shift))
            return
        self._zero_in_folio(first, start - (first << shift), fsize)
        self._zero_in_folio(last, 0, end - (last << shift))

    # -- file operations -----------------------------------------------------------------------

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """pwrite: copy `data` to file offset `offset`, filling holes with new folios and
        growing the size. Returns the bytes written (all of them)."""
        self._check_live()
        view = memoryview(data).cast("B")
        length = view.nbytes
        self._check_range(offset, length, "write")
        if not length:
            return 0  # Linux returns before write_begin: no seal applies to nothing
        end = offset + length
        # shmem_write_begin's order: write seals, then GROW, then the frozen mapping.
        if self.seals & (Seal.WRITE | Seal.FUTURE_WRITE):
            raise self._error("write sealed (F_SEAL_WRITE/F_SEAL_FUTURE_WRITE)", errno.EPERM)
        if end > self.size and Seal.GROW in self.seals:
            raise self._error(
                f"write to [{offset}, {end}) would grow it past {self.size} bytes: "
                "F_SEAL_GROW is set",
                errno.EPERM,
            )
        if end > self.size and self.mapping_frozen:
            raise self._error(
                f"write to [{offset}, {end}) would grow it past {self.size} bytes: "
                "size is frozen while preserved",
                errno.EPERM,
            )
        shift = self._folio_shift
        a, b = offset >> shift, self._folios_covering(end)
        self._populate(a, b, dirty=True)  # the only step that can fail (ENOMEM)
        self.size = max(self.size, end)
        # Every folio of [a, b) now exists and is dirty, and runs are maximal, so each run
        # here is one physically contiguous piece of RAM: one copy per run.
        k0, k1 = self._overlap(a, b)
        runs = self._runs.slice(k0, k1)
        for idx, pfn, cnt in zip(
            runs.idx.tolist(), runs.pfn.tolist(), runs.cnt.tolist(), strict=True
        ):
            lo = max(offset, idx << shift)
            hi = min(end, (idx + cnt) << shift)
            phys = (pfn << PAGE_SHIFT) + (lo - (idx << shift))
            self.memory.write(phys >> PAGE_SHIFT, view[lo - offset : hi - offset], phys % PAGE_SIZE)
        return length

    def read(self, offset: int, length: int) -> bytes:
        """pread: up to `length` bytes at `offset`; short at EOF, holes read as zero
        without touching RAM (reading through `hw` never makes a hole resident)."""
        self._check_live()
        self._check_range(offset, length, "read")
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        shift = self._folio_shift
        k0, k1 = self._overlap(offset >> shift, self._folios_covering(end))
        runs = self._runs.slice(k0, k1)
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

    def seek(self, pos: int) -> int:
        """lseek(SEEK_SET): past EOF is allowed, negative is not."""
        self._check_live()
        if pos < 0:
            raise self._error(f"seek to negative offset {pos}", errno.EINVAL)
        self.pos = pos
        return pos

    def truncate(self, size: int) -> None:
        """ftruncate: shrinking frees whole folios past the new size and zeroes the cut
        tail of the last one; growing only moves the size (the new range is a hole)."""
        self._check_live()
        if size < 0 or size > MAX_FILE_SIZE:
            raise self._error(f"truncate to invalid size {size}", errno.EINVAL)
        old = self.size
        # shmem_setattr's order: seals first, then the frozen mapping (only if it changes).
        if size < old and Seal.SHRINK in self.seals:
            raise self._error(f"shrink to {size} bytes: F_SEAL_SHRINK is set", errno.EPERM)
        if size > old and Seal.GROW in self.seals:
            raise self._error(f"grow to {size} bytes: F_SEAL_GROW is set", errno.EPERM)
        if size == old:
            return
        if self.mapping_frozen:
            raise self._error(
                f"resize from {old} to {size} bytes: size is frozen while preserved",
                errno.EPERM,
            )
        self.size = size
        if size < old:
            self._cut_beyond(size)

    def _cut_beyond(self, size: int) -> None:
        """Free every folio wholly past `size` (including fallocate'd ones past the old
        EOF) and zero the rest of the folio `size` falls in."""
        if not self._runs.idx.size:
            return
        keep = self._folios_covering(size)
        last = int(self._runs.idx[-1] + self._runs.cnt[-1])
        self._unmap(keep, last)
        if size % self.folio_size:
            self._zero_bytes(size, keep << self._folio_shift)

    def fallocate(
        self, offset: int, length: int, *, punch_hole: bool = False, keep_size: bool = False
    ) -> None:
        """Allocate folios for [offset, offset + length) (growing the size unless
        `keep_size`), or punch a hole there (whole folios freed, partial ends zeroed, size
        unchanged: punching implies keep_size)."""
        self._check_live()
        if offset < 0 or length <= 0:
            raise self._error(f"fallocate at offset {offset} length {length}", errno.EINVAL)
        self._check_range(offset, length, "fallocate")
        end = offset + length
        # shmem_fallocate with SHMEM_F_MAPPING_FROZEN refuses every mode up front.
        if self.mapping_frozen:
            raise self._error("fallocate: mapping is frozen while preserved", errno.EPERM)
        if punch_hole:
            if self.seals & (Seal.WRITE | Seal.FUTURE_WRITE):
                raise self._error(
                    "punch hole: write sealed (F_SEAL_WRITE/F_SEAL_FUTURE_WRITE)", errno.EPERM
                )
            self._punch(offset, end)
            return
        # Linux checks GROW against the end even with FALLOC_FL_KEEP_SIZE.
        if end > self.size and Seal.GROW in self.seals:
            raise self._error(
                f"fallocate to [{offset}, {end}) past {self.size} bytes: F_SEAL_GROW is set",
                errno.EPERM,
            )
        self._populate(offset >> self._folio_shift, self._folios_covering(end), dirty=False)
        if not keep_size and end > self.size:
            self.size = end

    def _punch(self, start: int, end: int) -> None:
        shift = self._folio_shift
        whole_a = self._folios_covering(start)
        whole_b = end >> shift
        if whole_a < whole_b:
            self._unmap(whole_a, whole_b)
            if start < whole_a << shift:
                self._zero_bytes(start, whole_a << shift)
            if end > whole_b << shift:
                self._zero_bytes(whole_b << shift, end)
        else:  # no whole folio inside: zero within one folio or across two neighbours
            self._zero_bytes(start, end)

    def add_seals(self, seals: Seal) -> None:
        """F_ADD_SEALS, with memfd_add_seals' checks in its order."""
        self._check_live()
        if Seal.SEAL in self.seals:
            cause = (
                "sealing is not allowed (created without MFD_ALLOW_SEALING)"
                if not self.allow_sealing
                else "seals are sealed (F_SEAL_SEAL)"
            )
            raise self._error(cause, errno.EPERM)
        # memfd_wait_for_pins: a preserved memfd's folios are long-term pinned, so the
        # first F_SEAL_WRITE cannot wait them out and fails EBUSY.
        if Seal.WRITE in seals and Seal.WRITE not in self.seals and self.mapping_frozen:
            raise self._error("F_SEAL_WRITE: folios are pinned while preserved", errno.EBUSY)
        self.seals |= seals

    def freeze_mapping(self) -> None:
        """Set SHMEM_F_MAPPING_FROZEN (live-update preserve)."""
        self._check_live()
        self.mapping_frozen = True

    def unfreeze_mapping(self) -> None:
        """Clear SHMEM_F_MAPPING_FROZEN (unpreserve, or after retrieve)."""
        self.mapping_frozen = False

    # -- live update -----------------------------------------------------------------------

    def fill_holes(self) -> int:
        """Give every hole in [0, size) (rounded up to whole folios) a zeroed folio, as
        memfd_pin_folios does (the live-update handler calls it at prepare when the record
        format is dense); writes nothing and marks nothing dirty.
        Returns the number of folios added; ENOMEM leaves the memfd as it was."""
        self._check_live()
        return self._populate(0, self._folios_covering(self.size), dirty=False)

    def folio_runs(self) -> tuple[Int64Array, Int64Array, Int64Array, BoolArray]:
        """Copies of the runs: (first index, first pfn, folio count, dirty), by index."""
        r = self._runs
        return r.idx.copy(), r.pfn.copy(), r.cnt.copy(), r.dirty.copy()

    def folio_arrays(self) -> tuple[Int64Array, Int64Array, BoolArray]:
        """One entry per folio, sorted by index: (index, pfn, dirty)."""
        r = self._runs
        return expand_runs(r.idx, r.pfn, r.cnt, r.dirty, self.folio_order)

    def adopt(self, indices: npt.ArrayLike, pfns: npt.ArrayLike, dirty: npt.ArrayLike) -> None:
        """Build the page cache of a fresh memfd from restored folios (one entry per folio,
        in any order). The memfd takes ownership of the frames: `release` frees them.
        Size and pos are the caller's to set."""
        self._check_live()
        if self._runs.idx.size:
            raise self._error("adopt into a memfd that already has folios", errno.EINVAL)
        idx = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
        pfn = np.ascontiguousarray(pfns, dtype=np.int64).reshape(-1)
        drt = np.ascontiguousarray(dirty, dtype=np.bool_).reshape(-1)
        if not idx.size == pfn.size == drt.size:
            raise self._error(
                f"adopt: {idx.size} indices, {pfn.size} pfns, {drt.size} dirty flags",
                errno.EINVAL,
            )
        if not idx.size:
            return
        if idx.size > 1 and not (idx[1:] >= idx[:-1]).all():
            order = np.argsort(idx)  # uniqueness is checked below: no need for stable
            idx, pfn, drt = idx[order], pfn[order], drt[order]
        step = 1 << self.folio_order
        if idx.size > 1 and not (idx[1:] > idx[:-1]).all():
            raise self._error("adopt: a folio index appears twice", errno.EINVAL)
        if int(idx[0]) < 0 or (pfn < 0).any() or (pfn % step).any():
            raise self._error(
                f"adopt: negative index or pfn not aligned to order {self.folio_order}",
                errno.EINVAL,
            )
        breaks = np.flatnonzero(
            (np.diff(idx) != 1) | (np.diff(pfn) != step) | (drt[1:] != drt[:-1])
        )
        heads = np.concatenate(([0], breaks + 1))
        cnt = np.diff(np.concatenate((heads, [idx.size]))).astype(np.int64)
        runs = _Runs(idx[heads], pfn[heads], cnt, drt[heads]).merged(self.folio_order)
        if runs.frames(self.folio_order).total() != idx.size * step:
            raise self._error("adopt: two folios share frames", errno.EINVAL)
        self._runs = runs

    # -- accounting and lifetime -------------------------------------------------------------

    def populated_folios(self) -> int:
        return int(self._runs.cnt.sum())

    def resident_bytes(self) -> int:
        """Bytes of RAM assigned to the memfd (populated folios, written or not)."""
        return self.populated_folios() * self.folio_size

    def release(self) -> None:
        """Free every folio back to the allocator (contents lost). Idempotent; the file is
        unusable afterwards."""
        if self._released:
            return
        self._released = True
        frames = self._runs.frames(self.folio_order)
        self._runs = _Runs.empty()
        self.mm.free_extents(frames)


class HugetlbMemfdFile(MemfdFile):
    """A memfd created with MFD_HUGETLB: hugetlbfs-backed, not shmem.

    It exists so live update can refuse it: the memfd handler preserves shmem memfds only
    (reference §4.1), so preserving one of these finds no handler. Folios are huge pages
    (order 9 = 2 MiB or 18 = 1 GiB, the MFD_HUGE_* sizes) and the size must stay a whole
    number of them (hugetlbfs_setattr: EINVAL). `write` keeps working although hugetlbfs
    has no write(): it stands in for stores through a mapping, which this model lacks."""

    HUGE_ORDERS = (9, 18)

    def __init__(
        self,
        memory: PhysicalMemory,
        mm: FolioSource,
        *,
        name: str = "",
        folio_order: int = 9,
        allow_sealing: bool = True,
    ) -> None:
        if folio_order not in self.HUGE_ORDERS:
            raise KernelError(
                f"hugetlb memfd folio order {folio_order} is not a huge page size "
                f"(orders {self.HUGE_ORDERS})",
                errno=errno.EINVAL,
            )
        super().__init__(
            memory, mm, name=name, folio_order=folio_order, allow_sealing=allow_sealing
        )

    def describe(self) -> str:
        return f'{self.file_type} "{self.name}" (hugetlb, inode {self.inode})'

    def truncate(self, size: int) -> None:
        if size % self.folio_size:
            raise self._error(
                f"truncate to {size} bytes: not a multiple of the {self.folio_size}-byte huge page",
                errno.EINVAL,
            )
        super().truncate(size)
