"""An emulated memfd: anonymous shared memory whose folios are frames of emulated RAM.

This module owns the memfd file object: its size, file offset and seals, the policy the
file operations enforce (which seal or state forbids what, and in Linux's order), and the
`SHMEM_F_MAPPING_FROZEN` flag the live-update handler sets while the file is preserved
(reference §4.1, §8 item 12). Its folios are a `PageCache` (`memfd.pagecache`), so that
what a kexec keeps or loses is exactly what KHO preserved: after a kexec nothing of this
object survives except the frames and the handler's records, from which `adopt` rebuilds
a fresh memfd. The MFD_HUGETLB variant is `memfd.hugetlb`.

The file keeps bytes at or past `size` zero in every folio (shrinking and punching zero the
partial folio they cut), so growing the file exposes zeros, as Linux guarantees; folios may
lie past EOF only through `fallocate(keep_size=True)`, as in shmem.

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

import errno

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PhysicalMemory
from luod.kernel_model.errors import KernelError
from luod.kernel_model.extents import Int64Array
from luod.kernel_model.memfd.pagecache import PageCache
from luod.kernel_model.memfd.runs import BoolArray, FolioRuns, expand_runs
from luod.kernel_model.memfd.seals import WRITE_SEALS, Seal
from luod.kernel_model.mm import MAX_ORDER, FolioSource
from luod.kernel_model.vfs import File

# Linux's MAX_LFS_FILESIZE on 64-bit: the largest size/offset shmem accepts. Byte
# arithmetic is done on Python ints; numpy only ever sees folio indices (< 2**51).
MAX_FILE_SIZE = (1 << 63) - 1


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
        self._cache = PageCache(memory, mm, folio_order)
        self._released = False

    @property
    def folio_size(self) -> int:
        """Bytes per folio."""
        return self._cache.folio_size

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
        if self.seals & WRITE_SEALS:
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
        self._cache.write(offset, view)
        self.size = max(self.size, end)
        return length

    def read(self, offset: int, length: int) -> bytes:
        """pread: up to `length` bytes at `offset`; short at EOF, holes read as zero
        without touching RAM (reading through `hw` never makes a hole resident)."""
        self._check_live()
        self._check_range(offset, length, "read")
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        return self._cache.read(offset, end)

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
            self._cache.cut_beyond(size)

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
            if self.seals & WRITE_SEALS:
                raise self._error(
                    "punch hole: write sealed (F_SEAL_WRITE/F_SEAL_FUTURE_WRITE)", errno.EPERM
                )
            self._cache.punch(offset, end)
            return
        # Linux checks GROW against the end even with FALLOC_FL_KEEP_SIZE.
        if end > self.size and Seal.GROW in self.seals:
            raise self._error(
                f"fallocate to [{offset}, {end}) past {self.size} bytes: F_SEAL_GROW is set",
                errno.EPERM,
            )
        cache = self._cache
        cache.populate(offset >> cache.folio_shift, cache.folios_covering(end), dirty=False)
        if not keep_size and end > self.size:
            self.size = end

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
        return self._cache.populate(0, self._cache.folios_covering(self.size), dirty=False)

    def folio_runs(self) -> tuple[Int64Array, Int64Array, Int64Array, BoolArray]:
        """Copies of the runs: (first index, first pfn, folio count, dirty), by index."""
        r = self._cache.runs
        return r.idx.copy(), r.pfn.copy(), r.cnt.copy(), r.dirty.copy()

    def folio_arrays(self) -> tuple[Int64Array, Int64Array, BoolArray]:
        """One entry per folio, sorted by index: (index, pfn, dirty)."""
        r = self._cache.runs
        return expand_runs(r.idx, r.pfn, r.cnt, r.dirty, self.folio_order)

    def data_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) byte ranges below `size` that hold data, in file order and
        merged: everything else (holes, folios never written, frames whose data a kexec
        lost) reads as zero. Copying these ranges out copies the file."""
        self._check_live()
        return self._cache.data_ranges(self.size)

    def adopt(self, indices: npt.ArrayLike, pfns: npt.ArrayLike, dirty: npt.ArrayLike) -> None:
        """Build the page cache of a fresh memfd from restored folios (one entry per folio,
        in any order). The memfd takes ownership of the frames: `release` frees them.
        Size and pos are the caller's to set."""
        self._check_live()
        if self._cache.runs.idx.size:
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
        runs = FolioRuns.of_folios(idx, pfn, drt, self.folio_order)
        if runs.frames(self.folio_order).total() != idx.size * step:
            raise self._error("adopt: two folios share frames", errno.EINVAL)
        self._cache.runs = runs

    # -- accounting and lifetime -------------------------------------------------------------

    def populated_folios(self) -> int:
        return self._cache.populated_folios()

    def resident_bytes(self) -> int:
        """Bytes of RAM assigned to the memfd (populated folios, written or not)."""
        return self.populated_folios() * self.folio_size

    def release(self) -> None:
        """Free every folio back to the allocator (contents lost). Idempotent; the file is
        unusable afterwards."""
        if self._released:
            return
        self._released = True
        self._cache.free_all()
