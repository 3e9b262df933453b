"""Checking a retrieved memfd against its pattern, every byte, without reading holes.

Owned here: the proof that guest memory survived. The memfd's data extents are found with
SEEK_DATA/SEEK_HOLE, so a 1 TiB sparse guest costs its data pages, not its size; a hole
reads zero by definition and needs no reading. Every page inside a data extent is read (preadv into
one reused 64 MiB buffer, checked in numpy batches) and must be either its pattern page
(`pattern.is_pattern`) with the exact words, or all zero. Every pattern page must have been
found in a data extent: one that fell into a hole was lost. Together that accounts for
every byte of the memfd.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import Any, Final

import attrs
import numpy as np

from luod_vmm.pattern import PAGE, WORDS, Int64Array, PagePattern, U64Array

__all__ = ["MemoryCheck", "data_extents", "verify_memfd"]

BATCH_PAGES: Final = 16384  # 64 MiB read per numpy gather


@attrs.frozen
class MemoryCheck:
    """The verdict on one memfd. Page numbers are 4 KiB pages from the start."""

    size: int
    pattern_pages: int  # pattern pages the memory must hold
    intact: int  # pattern pages found with the right words
    corrupt: int  # pattern pages found with wrong words
    stray: int  # other pages holding anything but zeros
    bytes_read: int  # bytes of data extents read (holes are not read)
    first_bad_page: int | None

    @property
    def missing(self) -> int:
        """Pattern pages that were holes: lost."""
        return self.pattern_pages - self.intact - self.corrupt

    @property
    def ok(self) -> bool:
        return self.intact == self.pattern_pages and not self.corrupt and not self.stray

    def problem(self, what: str) -> str | None:
        """One line describing what is wrong, or None."""
        if self.ok:
            return None
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.missing, "pattern pages lost (holes)"),
                (self.corrupt, "pattern pages corrupt"),
                (self.stray, "pages that should be zero hold data"),
            )
            if n
        ]
        first = "" if self.first_bad_page is None else f" (first bad page {self.first_bad_page})"
        return f"{what}: {', '.join(parts)}{first}"

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "missing": self.missing, "ok": self.ok}


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The [first, last) page ranges of `fd` that hold data, in order (SEEK_DATA/HOLE)."""
    offset = 0
    while offset < size:
        try:
            lo = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset
                return
            raise
        if lo >= size:
            return
        hi = min(os.lseek(fd, lo, os.SEEK_HOLE), size)
        yield lo // PAGE, -(-hi // PAGE)
        offset = hi


def _batches(extents: Iterator[tuple[int, int]]) -> Iterator[list[tuple[int, int]]]:
    """The extents cut into groups of at most BATCH_PAGES pages."""
    group: list[tuple[int, int]] = []
    pending = 0
    for first, end in extents:
        lo = first
        while lo < end:
            take = min(end - lo, BATCH_PAGES - pending)
            group.append((lo, lo + take))
            pending += take
            lo += take
            if pending == BATCH_PAGES:
                yield group
                group, pending = [], 0
    if group:
        yield group


def _read_group(fd: int, group: list[tuple[int, int]], buffer: U64Array) -> Int64Array:
    """Read the group's pages into `buffer` (one preadv per extent, no allocation);
    return their page indices."""
    raw = memoryview(buffer.data).cast("B")
    at = 0
    for lo, hi in group:
        want = (hi - lo) * PAGE
        got = os.preadv(fd, [raw[at : at + want]], lo * PAGE)
        if got != want:
            raise OSError(errno.EIO, f"short read of {got} bytes at page {lo} (wanted {want})")
        at += want
    los = np.array([lo for lo, _ in group], dtype=np.int64)
    lengths = np.array([hi - lo for lo, hi in group], dtype=np.int64)
    starts = np.repeat(los - (np.cumsum(lengths) - lengths), lengths)
    pages: Int64Array = starts + np.arange(int(lengths.sum()), dtype=np.int64)
    return pages


def verify_memfd(fd: int, size: int, pattern: PagePattern) -> MemoryCheck:
    """Check the first `size` bytes of `fd` (a multiple of 4 KiB) against `pattern`."""
    npages = size // PAGE
    intact = corrupt = stray = read = 0
    first_bad: int | None = None
    buffer: U64Array = np.empty((BATCH_PAGES, WORDS), dtype=np.uint64)
    for group in _batches(data_extents(fd, npages * PAGE)):
        pages = _read_group(fd, group, buffer)
        data = buffer[: pages.size]
        read += pages.size * PAGE
        is_pattern = pattern.is_pattern(pages)
        wrong = (data[is_pattern] != pattern.words(pages[is_pattern])).any(axis=1)
        dirty = data[~is_pattern].any(axis=1)
        intact += int(wrong.size - wrong.sum())
        corrupt += int(wrong.sum())
        stray += int(dirty.sum())
        if first_bad is None and (wrong.any() or dirty.any()):
            bad = np.concatenate([pages[is_pattern][wrong], pages[~is_pattern][dirty]])
            first_bad = int(bad.min())
    check = MemoryCheck(size, pattern.count(npages), intact, corrupt, stray, read, first_bad)
    if check.missing and check.first_bad_page is None:
        return attrs.evolve(check, first_bad_page=_first_missing(fd, npages, pattern))
    return check


def _first_missing(fd: int, npages: int, pattern: PagePattern) -> int | None:
    """The first pattern page that lies in a hole (for the report)."""
    page = 0  # the next pattern page not yet seen inside a data extent
    for lo, hi in data_extents(fd, npages * PAGE):
        if page < lo:
            return page
        page = max(page, -(-hi // pattern.stride) * pattern.stride)
    return page if page < npages else None
