"""The guest memory pattern: which 4 KiB pages hold data, and exactly which bytes.

Owned here so that the writer (`run`) and the verifier (`resume`) share one definition.
A pattern page is 512 little-endian u64 words: a 4 KiB base block drawn from
SHAKE-256(name, label), XORed with `(page + 1) * GOLDEN` (wrapping). So every page differs
from every other page and from every other VMM's pages (a misplaced, stale or foreign page
is caught), no pattern page is all zero, and a batch of pages is one numpy expression.

Dense guests write every page (`stride` 1); `--sparse` writes one page in every 512
(`stride` 512): the others are holes and must still read zero after the update.
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from luod_vmm.options import VmmOptions

__all__ = ["PAGE", "SPARSE_STRIDE", "WORDS", "PagePattern", "gmem_pattern", "ram_pattern"]

PAGE: Final = 4096
WORDS: Final = PAGE // 8
SPARSE_STRIDE: Final = 512
GMEM_STRIDE: Final = 8
GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)

U64Array = npt.NDArray[np.uint64]
Int64Array = npt.NDArray[np.int64]


@attrs.frozen(eq=False)
class PagePattern:
    """Page `p` holds data iff `p % stride == 0`; its words are `words([p])[0]`."""

    base: U64Array
    stride: int

    @classmethod
    def derive(cls, name: str, label: str, stride: int) -> PagePattern:
        raw = hashlib.shake_256(f"luod-vmm pattern\0{name}\0{label}".encode()).digest(PAGE)
        return cls(np.frombuffer(raw, dtype="<u8").astype(np.uint64), stride)

    def count(self, npages: int) -> int:
        """How many pattern pages a memory of `npages` pages holds."""
        return -(-npages // self.stride)

    def is_pattern(self, pages: Int64Array) -> npt.NDArray[np.bool_]:
        return np.asarray(pages % self.stride == 0)

    def words(self, pages: Int64Array) -> U64Array:
        """The (n, 512) words of pattern pages `pages` (page indices, 4 KiB units)."""
        mix = (np.asarray(pages, dtype=np.int64).astype(np.uint64) + np.uint64(1)) * GOLDEN
        out: U64Array = self.base[None, :] ^ mix[:, None]
        return out


def ram_pattern(options: VmmOptions) -> PagePattern:
    return PagePattern.derive(options.name, "ram", SPARSE_STRIDE if options.sparse else 1)


def gmem_pattern(options: VmmOptions) -> PagePattern:
    """The guest_memfd holds "a little pattern": one page in every 8."""
    return PagePattern.derive(options.name, "gmem", GMEM_STRIDE)
