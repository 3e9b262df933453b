"""The `kho-v1` preserved-memory map: per-order bitmaps in a linked list of chunks.

Layout (little-endian, as the kernel's native structs on x86-64), written at finalize:
- a chunk is one page: header {u64 next chunk phys (0 ends the list), u32 order,
  u32 num_elms}, then up to 255 entries {u64 phys_start, u64 bitmap phys};
- a bitmap is 512 bytes (4096 bits); bit i set means the block of `1 << order` frames at
  `phys_start + (i << (order + 12))` is preserved; `phys_start` is aligned to the 4096
  blocks one bitmap covers.
Map pages are ordinary allocations, not preserved: the next kernel reads them while it
boots and they are lost with everything else it does not keep.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.extents import Extents, Int64Array, sorted_unique
from luod.kernel_model.kho.order_bitmap import CHUNK_BLOCKS
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import MAX_ORDER, FrameAllocator

COMPATIBLE = "kho-v1"
BITMAP_BITS = 4096
BITMAP_BYTES = BITMAP_BITS // 8
HEADER_BYTES = 16
ENTRY_BYTES = 16
ENTRIES_PER_CHUNK = (PAGE_SIZE - HEADER_BYTES) // ENTRY_BYTES
BITMAPS_PER_PAGE = PAGE_SIZE // BITMAP_BYTES


class MemMapCorrupt(ValueError):
    """The handed-over map cannot be trusted; the reason names what is wrong."""


def write(
    preserved: PreservedSet, mm: FrameAllocator, memory: PhysicalMemory
) -> tuple[int, Extents]:
    """Serialise `preserved`; returns (phys of the first chunk or 0, frames used)."""
    orders: list[int] = []
    starts: list[Int64Array] = []
    bitmaps: list[npt.NDArray[np.uint8]] = []
    for bitmap in preserved.orders:
        for cid, chunk in bitmap.chunks():
            packed = np.packbits(chunk, bitorder="little").reshape(-1, BITMAP_BYTES)
            used = np.flatnonzero(packed.any(axis=1))
            first_block = (cid * CHUNK_BLOCKS) + used.astype(np.int64) * BITMAP_BITS
            orders.append(bitmap.order)
            starts.append(first_block << (bitmap.order + PAGE_SHIFT))
            bitmaps.append(packed[used])
    if not orders:
        return 0, Extents.empty()
    # Entries grouped per order, since a chunk names one order.
    per_order: dict[int, list[int]] = {}
    for i, order in enumerate(orders):
        per_order.setdefault(order, []).append(i)
    all_bitmaps = np.concatenate(bitmaps)
    nbitmaps = all_bitmaps.shape[0]
    bitmap_pages = -(-nbitmaps // BITMAPS_PER_PAGE)
    chunk_counts = {
        o: -(-sum(starts[i].size for i in idx) // ENTRIES_PER_CHUNK) for o, idx in per_order.items()
    }
    chunk_pages = sum(chunk_counts.values())
    bitmap_pfn = mm.alloc_extent(bitmap_pages)
    chunk_pfn = mm.alloc_extent(chunk_pages)
    image = np.zeros(bitmap_pages * PAGE_SIZE, dtype=np.uint8)
    image[: nbitmaps * BITMAP_BYTES] = all_bitmaps.reshape(-1)
    memory.write(bitmap_pfn, image.tobytes())

    bitmap_phys = (bitmap_pfn << PAGE_SHIFT) + np.arange(nbitmaps, dtype=np.int64) * BITMAP_BYTES
    offsets = np.cumsum([0] + [s.size for s in starts])
    chunks = np.zeros((chunk_pages, PAGE_SIZE // 8), dtype="<u8")
    page = 0
    for order, idx in sorted(per_order.items()):
        phys_start = np.concatenate([starts[i] for i in idx])
        bphys = np.concatenate([bitmap_phys[offsets[i] : offsets[i + 1]] for i in idx])
        for lo in range(0, phys_start.size, ENTRIES_PER_CHUNK):
            n = min(ENTRIES_PER_CHUNK, phys_start.size - lo)
            row = chunks[page]
            row[1] = order | (n << 32)
            row[2 : 2 + 2 * n : 2] = phys_start[lo : lo + n]
            row[3 : 3 + 2 * n : 2] = bphys[lo : lo + n]
            page += 1
    chunk_phys = (chunk_pfn + np.arange(chunk_pages, dtype=np.int64)) << PAGE_SHIFT
    chunks[:-1, 0] = chunk_phys[1:]
    memory.write(chunk_pfn, chunks.tobytes())
    used_frames = Extents.of(bitmap_pfn, bitmap_pfn + bitmap_pages) | Extents.of(
        chunk_pfn, chunk_pfn + chunk_pages
    )
    return int(chunk_phys[0]), used_frames


def read(memory: PhysicalMemory, first_phys: int) -> PreservedSet:
    """Parse the map at `first_phys` into the set of preserved blocks.

    Raises MemMapCorrupt for anything outside RAM, misaligned, cyclic, or inconsistent."""
    entries: list[tuple[int, Int64Array, Int64Array]] = []
    seen: set[int] = set()
    phys = first_phys
    while phys:
        if phys % PAGE_SIZE or phys + PAGE_SIZE > memory.size_bytes:
            raise MemMapCorrupt(
                f"map chunk at {phys:#x} is misaligned or outside RAM (truncated map)"
            )
        if phys in seen:
            raise MemMapCorrupt(f"map chunk list loops back to {phys:#x}")
        seen.add(phys)
        page = np.frombuffer(memory.read_at(phys, PAGE_SIZE), dtype="<u8")
        order, count = int(page[1]) & 0xFFFFFFFF, int(page[1]) >> 32
        if order > MAX_ORDER:
            raise MemMapCorrupt(f"map chunk at {phys:#x} names order {order} > {MAX_ORDER}")
        if count > ENTRIES_PER_CHUNK:
            raise MemMapCorrupt(
                f"map chunk at {phys:#x} claims {count} entries, at most {ENTRIES_PER_CHUNK} fit"
            )
        starts = page[2 : 2 + 2 * count : 2].astype(np.int64)
        bitmaps = page[3 : 3 + 2 * count : 2].astype(np.int64)
        entries.append((order, starts, bitmaps))
        phys = int(page[0])

    preserved = PreservedSet(memory.frames)
    for order in range(MAX_ORDER + 1):
        mine = [(s, b) for o, s, b in entries if o == order and s.size]
        if not mine:
            continue
        start = np.concatenate([s for s, _ in mine])
        bphys = np.concatenate([b for _, b in mine])
        span = BITMAP_BITS << (order + PAGE_SHIFT)
        # u64 fields read as int64: anything >= 2**63 is negative and just as invalid
        if (start < 0).any() or (start % span).any() or (start >= memory.size_bytes).any():
            raise MemMapCorrupt(f"order-{order} bitmap start outside RAM or misaligned")
        if (
            (bphys < 0).any()
            or (bphys % BITMAP_BYTES).any()
            or (bphys + BITMAP_BYTES > memory.size_bytes).any()
        ):
            raise MemMapCorrupt(f"order-{order} bitmap pointer outside RAM (truncated map)")
        if sorted_unique(start).size != start.size:
            raise MemMapCorrupt(f"order-{order} bitmap listed twice")
        bits = np.unpackbits(memory.gather(bphys, BITMAP_BYTES), axis=1, bitorder="little")
        first_block = start >> (order + PAGE_SHIFT)
        beyond = (memory.frames >> order) - first_block  # bits past the end of RAM
        if (beyond < BITMAP_BITS).any():
            for row in np.flatnonzero(beyond < BITMAP_BITS).tolist():
                if bits[row, max(int(beyond[row]), 0) :].any():
                    raise MemMapCorrupt(f"order-{order} bitmap marks frames beyond RAM")
        preserved.orders[order].load(first_block, bits.view(np.bool_))
    return preserved
