"""Physical memory of the emulated machine, addressed by page frame number (pfn).

Storage is one sparse memfd private to the daemon (byte offset = pfn * PAGE_SIZE), mapped
once. A terabyte of emulated RAM costs nothing until written; memory that a kernel loses is
a punched hole, so it reads as zero and the host gets the page back. Frames are 4 KiB.

Invariants:
- every access is bounds-checked against the machine's frame count (`MemoryRangeError`);
- `data_extents` reports exactly the ranges that hold bytes (SEEK_DATA/SEEK_HOLE), which is
  how a booting kernel releases old contents at a cost that grows with what was written,
  not with RAM size; `data_extents_outside` skips the ranges the kernel keeps, so the
  cost grows with what is lost, not with what was preserved (the blackout's floor).
"""

from __future__ import annotations

import itertools
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


class MemoryRangeError(ValueError):
    """An access outside the machine's physical memory."""


class PhysicalMemory:
    """Sparse, pfn-addressed RAM. Not thread-safe; the daemon serialises access."""

    def __init__(self, size_bytes: int, *, fd: int | None = None) -> None:
        """A fresh memfd, or RAM kept in `fd` (a memfd or a sparse file, which this object
        then owns): its bytes are kept, and its size becomes `size_bytes`."""
        if size_bytes <= 0 or size_bytes % PAGE_SIZE:
            raise ValueError(f"RAM size {size_bytes} is not a positive multiple of {PAGE_SIZE}")
        self.size_bytes = size_bytes
        self.frames = size_bytes >> PAGE_SHIFT
        self._fd = os.memfd_create("luod-ram", os.MFD_CLOEXEC) if fd is None else fd
        # In a memfd (shmem) every allocated block is a page of data; a file on disk may
        # count its filesystem's metadata in st_blocks too.
        self._shmem = fd is None or os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        if os.fstat(self._fd).st_size != size_bytes:
            os.ftruncate(self._fd, size_bytes)
        self._map = mmap.mmap(self._fd, size_bytes, mmap.MAP_SHARED)
        self._bytes: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8)

    @classmethod
    def backed_by(cls, path: Path, size_bytes: int) -> PhysicalMemory:
        """RAM kept in the sparse file `path` (created if missing): what it holds now is
        what the machine's RAM holds, and every write lands there, with no copy."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            return cls(size_bytes, fd=fd)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        """The backing fd (for handing the RAM to the next luod process)."""
        return self._fd

    def close(self) -> None:
        """Release the backing; the object is unusable afterwards."""
        del self._bytes
        self._map.close()
        os.close(self._fd)

    def _check(self, pfn: int, npages: int) -> None:
        if pfn < 0 or npages < 0 or pfn + npages > self.frames:
            raise MemoryRangeError(
                f"frames [{pfn:#x}, {pfn + npages:#x}) outside RAM of {self.frames:#x} frames"
            )

    def read(self, pfn: int, npages: int = 1) -> bytes:
        """Copy `npages` frames starting at `pfn` out of RAM."""
        self._check(pfn, npages)
        return self._pread(pfn << PAGE_SHIFT, npages << PAGE_SHIFT)

    def _pread(self, phys: int, length: int) -> bytes:
        # pread, not the mapping: a read fault on a shmem hole through MAP_SHARED allocates
        # a page, which would make lost memory resident again.
        out = os.pread(self._fd, length, phys)
        while len(out) < length:  # pread may return short on very large reads
            out += os.pread(self._fd, length - len(out), phys + len(out))
        return out

    def read_at(self, phys: int, length: int) -> bytes:
        """Copy `length` bytes at physical address `phys` (may span frames)."""
        if phys < 0 or length < 0 or phys + length > self.size_bytes:
            raise MemoryRangeError(
                f"bytes [{phys:#x}, {phys + length:#x}) outside RAM of {self.size_bytes:#x}"
            )
        return self._pread(phys, length)

    def view(self, pfn: int, npages: int = 1) -> npt.NDArray[np.uint8]:
        """A writable numpy view of frames; valid until `close`. No copy. Reading a hole
        through it makes the frame resident: use `read` to look at memory."""
        self._check(pfn, npages)
        return self._bytes[pfn << PAGE_SHIFT : (pfn + npages) << PAGE_SHIFT]

    def gather(self, phys: npt.NDArray[np.int64], length: int) -> npt.NDArray[np.uint8]:
        """Copy `length` bytes at each address in `phys` (each aligned to `length`, a power
        of two dividing the page size) into one (n, length) array."""
        if PAGE_SIZE % length or (phys % length).any():
            raise MemoryRangeError(f"gather of {length}-byte records at unaligned addresses")
        if phys.size and (int(phys.min()) < 0 or int(phys.max()) + length > self.size_bytes):
            raise MemoryRangeError(f"gather outside RAM of {self.size_bytes:#x} bytes")
        out = np.empty((phys.size, length), dtype=np.uint8)
        if not phys.size:
            return out
        # One pread per run of back-to-back records: writers lay them out contiguously.
        order = np.argsort(phys, kind="stable")
        sorted_phys = phys[order]
        cuts = np.flatnonzero(np.diff(sorted_phys) != length) + 1
        bounds = np.concatenate(([0], cuts, [phys.size])).tolist()
        for lo, hi in itertools.pairwise(bounds):
            run = self._pread(int(sorted_phys[lo]), (hi - lo) * length)
            out[order[lo:hi]] = np.frombuffer(run, dtype=np.uint8).reshape(-1, length)
        return out

    def write(self, pfn: int, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Write `data` starting `offset` bytes into frame `pfn`."""
        phys = (pfn << PAGE_SHIFT) + offset
        if pfn < 0 or offset < 0 or phys + len(data) > self.size_bytes:
            raise MemoryRangeError(
                f"write of {len(data)} bytes at {phys:#x} outside RAM of {self.size_bytes:#x}"
            )
        self._map[phys : phys + len(data)] = data

    def zero(self, pfn: int, npages: int = 1) -> None:
        """Lose frames: punch a hole so they read as zero and cost no host memory."""
        self._check(pfn, npages)
        if npages:
            self._map.madvise(mmap.MADV_REMOVE, pfn << PAGE_SHIFT, npages << PAGE_SHIFT)

    def zero_extents(self, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> None:
        """Lose every frame range [starts[i], ends[i])."""
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            self.zero(start, end - start)

    def data_extents(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Frame ranges that hold data (start, end arrays), rounded out to whole frames."""
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in self._byte_data_extents():
            starts.append(lo >> PAGE_SHIFT)
            ends.append((hi + PAGE_SIZE - 1) >> PAGE_SHIFT)
        return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)

    def data_extents_outside(
        self, keep_starts: npt.NDArray[np.int64], keep_ends: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Frame ranges that hold data and lie outside every sorted, disjoint frame range
        [keep_starts[i], keep_ends[i]). Data inside a kept range is jumped over in one
        step, so each kept range costs at most one extra seek, whatever it holds."""
        starts: list[int] = []
        ends: list[int] = []
        count = int(keep_starts.size)
        pfn = 0
        while pfn < self.frames:
            try:
                data = os.lseek(self._fd, pfn << PAGE_SHIFT, os.SEEK_DATA) >> PAGE_SHIFT
            except OSError:  # ENXIO: no data past pfn
                break
            k = int(np.searchsorted(keep_starts, data, side="right")) - 1
            if k >= 0 and int(keep_ends[k]) > data:
                pfn = int(keep_ends[k])
                continue
            hole = os.lseek(self._fd, data << PAGE_SHIFT, os.SEEK_HOLE)
            end = (hole + PAGE_SIZE - 1) >> PAGE_SHIFT
            if k + 1 < count:
                end = min(end, int(keep_starts[k + 1]))
            starts.append(data)
            ends.append(end)
            pfn = end
        return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)

    def _byte_data_extents(self) -> Iterator[tuple[int, int]]:
        offset = 0
        while offset < self.size_bytes:
            try:
                data = os.lseek(self._fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past offset
                return
            hole = os.lseek(self._fd, data, os.SEEK_HOLE)
            yield data, hole
            offset = hole

    def resident_bytes(self) -> int:
        """Bytes of RAM that hold data (what the emulation really costs the host)."""
        if self._shmem:  # one fstat, where walking the extents is a syscall per extent
            return os.fstat(self._fd).st_blocks * 512
        return sum(hi - lo for lo, hi in self._byte_data_extents())

    def dump(self, path: Path) -> None:
        """Write RAM to a sparse file of the same size: data extents only."""
        with path.open("wb") as out:
            out.truncate(self.size_bytes)
            for lo, hi in self._byte_data_extents():
                out.seek(lo)
                out.write(self._map[lo:hi])

    @classmethod
    def load(cls, path: Path) -> PhysicalMemory:
        """RAM whose contents are those of a `dump` file."""
        size = path.stat().st_size
        memory = cls(size)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset = 0
            while offset < size:
                try:
                    lo = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError:
                    break
                hi = os.lseek(fd, lo, os.SEEK_HOLE)
                memory._map[lo:hi] = os.pread(fd, hi - lo, lo)
                offset = hi
        finally:
            os.close(fd)
        return memory
