"""The memfd record formats `memfd-v1`, `memfd-v2` and `memfd-v3`: bytes only.

Record (little-endian, in preserved pages; `data` is the header's physical address):
  memfd-v1 header: u64 pos, u64 size, u64 nr_folios, u64 folios phys, u32 folio pages,
                   u16 reserved, u16 folio order                               (40 bytes)
  memfd-v2 header: u64 pos, u64 size, u32 seals, u32 flags, u64 nr_folios,
                   u64 folios phys, u32 folio pages, u16 reserved, u16 folio order (48 bytes)
  memfd-v3 header: u64 pos, u64 size, u32 seals, u32 flags, u64 nr_extents,
                   u64 extents phys, u32 extent pages, u16 reserved, u16 folio order,
                   u64 populated pages (the sum of the extents' npages)         (56 bytes)
  folio entry (v1, v2): u64 pfn (52 bits) | flags << 52 (DIRTY=1, UPTODATE=2), u64 index
  extent entry (v3):    u64 first page index, u64 pfn (52 bits) | flags << 52,
                        u64 npages; index, pfn and npages are multiples of the folio
                        size in pages, and one extent is physically contiguous     (24 bytes)
A dense record of a 1 TiB memfd in 4 KiB folios is 4 GiB whatever was written; a sparse
one is 24 bytes per populated extent. The folio order field is this emulation's: Linux
reads a folio's order from the page.

This module encodes and decodes headers and entry tables and checks what a table claims
before anything is sized from it; where the record lives and when it is written is the
handler's (`memfd.handler`).
"""

from __future__ import annotations

import struct

import attrs
import numpy as np

from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.runs import expand_runs

V1 = "memfd-v1"
V2 = "memfd-v2"
V3 = "memfd-v3"
SPARSE_FORMATS = frozenset({V3})
SEALED_FORMATS = frozenset({V2, V3})
HEADER_V1 = struct.Struct("<QQQQIHH")
HEADER_V2 = struct.Struct("<QQIIQQIHH")
HEADER_V3 = struct.Struct("<QQIIQQIHHQ")
ENTRY_BYTES = 16
EXTENT_BYTES = 24
PFN_BITS = 52
PFN_MASK = (1 << PFN_BITS) - 1
FOLIO_DIRTY = 1
FOLIO_UPTODATE = 2
FLAG_ALLOW_SEALING = 1


class RecordUnusable(Exception):
    """An entry table says something no kernel could have written; the message says what."""


@attrs.frozen
class MemfdRecord:
    """A record read back in the next kernel, one entry per folio."""

    pos: int
    size: int
    seals: int
    flags: int
    order: int
    indices: np.ndarray
    pfns: np.ndarray
    dirty: np.ndarray
    pages: tuple[tuple[int, int], ...]  # record pages (pfn, n), restored, to free
    extra: dict[str, int]  # every header field, for the handlers of other memfd-like files


def entry_table(memfd: MemfdFile, sparse: bool) -> np.ndarray:
    """The entry table: (folios, 2) dense entries or (extents, 3) sparse ones, u64."""
    clean = np.uint64(FOLIO_UPTODATE << PFN_BITS)
    written = np.uint64((FOLIO_DIRTY | FOLIO_UPTODATE) << PFN_BITS)
    if sparse:
        idx, pfns, counts, dirty = memfd.folio_runs()
        extents = np.empty((idx.size, 3), dtype="<u8")
        extents[:, 0] = (idx << memfd.folio_order).view(np.uint64)
        np.bitwise_or(pfns.view(np.uint64), np.where(dirty, written, clean), out=extents[:, 1])
        extents[:, 2] = (counts << memfd.folio_order).view(np.uint64)
        return extents
    indices, pfns, dirty = memfd.folio_arrays()
    entries = np.empty((indices.size, 2), dtype="<u8")
    np.bitwise_or(pfns.view(np.uint64), np.where(dirty, written, clean), out=entries[:, 0])
    entries[:, 1] = indices.view(np.uint64)
    return entries


def pack_header(
    memfd: MemfdFile,
    compatible: str,
    nr: int,
    table_phys: int,
    table_pages: int,
    order: int,
    populated: int,
) -> bytes:
    """The header of `compatible` for `memfd`, whose entry table of `nr` entries lies at
    `table_phys`; `populated` (folios) is written by v3 only."""
    if compatible == V1:
        return HEADER_V1.pack(memfd.pos, memfd.size, nr, table_phys, table_pages, 0, order)
    fields = (
        memfd.pos,
        memfd.size,
        memfd.seals.value,
        FLAG_ALLOW_SEALING if memfd.allow_sealing else 0,
        nr,
        table_phys,
        table_pages,
        0,
        order,
    )
    if compatible == V3:
        return HEADER_V3.pack(*fields, populated << order)
    return HEADER_V2.pack(*fields)


def parse_header(compatible: str, raw: bytes) -> dict[str, int]:
    """pos, size, seals, flags, nr, folios_phys, folio_pages, order, populated; under v3
    `nr`, `folios_phys` and `folio_pages` describe the extent table (elsewhere
    `populated` is -1)."""
    populated = -1
    if compatible == V3:
        pos, size, seals, flags, n, fphys, fpages, _, order, populated = HEADER_V3.unpack_from(raw)
    elif compatible == V2:
        pos, size, seals, flags, n, fphys, fpages, _, order = HEADER_V2.unpack_from(raw)
    else:
        pos, size, n, fphys, fpages, _, order = HEADER_V1.unpack_from(raw)
        seals = flags = 0
    return {
        "pos": pos,
        "size": size,
        "seals": seals,
        "flags": flags,
        "nr": n,
        "folios_phys": fphys,
        "folio_pages": fpages,
        "order": order,
        "populated": populated,
    }


def decode_entries(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense folio entries (u64 pairs) to (indices, pfns, dirty)."""
    entries = raw.reshape(-1, 2)
    indices = entries[:, 1].view(np.int64)
    pfns = (entries[:, 0] & np.uint64(PFN_MASK)).view(np.int64)
    dirty = ((entries[:, 0] >> np.uint64(PFN_BITS)) & np.uint64(FOLIO_DIRTY)).astype(bool)
    return indices, pfns, dirty


def decode_extents(
    raw: np.ndarray, header: dict[str, int], frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """v3 extents (u64 triples) to one entry per populated folio, checked against the
    header and the `frames` of RAM before anything is sized from them (a hostile count
    must not make the kernel allocate terabytes). Raises `RecordUnusable`."""
    extents = raw.reshape(-1, 3)
    order = header["order"]
    step = np.uint64((1 << order) - 1)
    first, word, npages = extents[:, 0], extents[:, 1], extents[:, 2]
    pfn = word & np.uint64(PFN_MASK)
    if ((first | pfn | npages) & step).any():
        raise RecordUnusable(f"an extent is not aligned to folio order {order}")
    if (npages == 0).any():
        raise RecordUnusable("an extent is empty")
    if (npages > np.uint64(frames)).any():
        raise RecordUnusable("an extent is larger than RAM")
    total = int(npages.sum(dtype=np.uint64)) if npages.size else 0
    if total != header["populated"] or total > frames:
        raise RecordUnusable(f"extents cover {total} pages, the header says {header['populated']}")
    dirty = ((word >> np.uint64(PFN_BITS)) & np.uint64(FOLIO_DIRTY)).astype(bool)
    return expand_runs(
        (first >> np.uint64(order)).view(np.int64),
        pfn.view(np.int64),
        (npages >> np.uint64(order)).view(np.int64),
        dirty,
        order,
    )
