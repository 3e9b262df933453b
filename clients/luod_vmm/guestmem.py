"""Real memfds holding a pattern: what `run` sends to luod as the guest's initial memory.

Owned here: producing the bytes cheaply for guests of any size. The memfd is sized with
ftruncate (a hole costs nothing); only pattern pages are written, generated in numpy
batches and written with pwrite, so a 1 TiB sparse guest costs its 2 GiB of pattern pages
and never a write of zeros.
"""

from __future__ import annotations

import os
from typing import Final

import numpy as np

from luod_vmm.pattern import PAGE, PagePattern

__all__ = ["pattern_memfd"]

BATCH_PAGES: Final = 16384  # 64 MiB of pattern generated at a time


def pattern_memfd(label: str, size: int, pattern: PagePattern) -> int:
    """A new real memfd of `size` bytes (a multiple of 4 KiB) holding `pattern`; the
    caller owns the returned fd."""
    if size <= 0 or size % PAGE:
        raise ValueError(f"memfd size {size} is not a positive multiple of {PAGE}")
    fd = os.memfd_create(label, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        write_pattern(fd, size, pattern)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_pattern(fd: int, size: int, pattern: PagePattern) -> None:
    """pwrite the pattern pages: one call per batch when they are contiguous (dense), one
    per page when sparse. (A shared mapping would cost a page-table page per sparse page.)"""
    npages = size // PAGE
    total = pattern.count(npages)
    stride = pattern.stride
    for first in range(0, total, BATCH_PAGES):
        pages = np.arange(first, min(first + BATCH_PAGES, total), dtype=np.int64) * stride
        block = memoryview(pattern.words(pages).data).cast("B")
        if stride == 1:
            _pwrite_all(fd, block, int(pages[0]) * PAGE)
            continue
        for i, page in enumerate(pages.tolist()):
            _pwrite_all(fd, block[i * PAGE : (i + 1) * PAGE], page * PAGE)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done
