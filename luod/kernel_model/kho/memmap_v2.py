"""The `kho-v2` preserved-memory map: one radix tree of page-sized nodes for every order.

This module owns the second-generation wire format (2026 kernels, "stateless KHO"): the
writer that turns a `PreservedSet` into tree pages in emulated RAM, and the reader with
which the next kernel walks those pages back into a `PreservedSet`, trusting nothing. It
exists beside `memmap_v1` because a kernel image may write either generation and a newer
kernel must read what an older one handed over; `formats.FORMATS` maps the compatible
string to this module.

Key. A preserved block of `1 << order` frames starting at `pfn` is the 64-bit key

    key = (1 << (64 - (PAGE_SHIFT + order))) | (pfn >> order)
        = (1 << (52 - order)) | block                      (PAGE_SHIFT = 12)

A physical address has 64 bits, so `pfn < 2**52` and `block = pfn >> order < 2**(52 -
order)`: the block index lies entirely below the "order bit", which is therefore the key's
highest set bit and names the order (`order = 52 - (bit_length(key) - 1)`). The order bit is
at most bit 52 (order 0) and at least bit 34 (MAX_ORDER 18), so every key is below
`2**53`: bits 53..63 are always zero, in particular the four bits 60..63 above the tree.

Levels. The low 60 key bits select a path through six levels, as in Linux's
`include/linux/kho/abi/radix_tree.h`:

        63:60    59:51    50:42    41:33    32:24    23:15       14:0
      +-------+--------+--------+--------+--------+--------+--------------+
      |   0   | level 5| level 4| level 3| level 2| level 1| level 0 leaf |
      +-------+--------+--------+--------+--------+--------+--------------+

Levels 5 (the root) to 1 are tables; level L is indexed by `(key >> (15 + 9 * (L - 1))) &
511`; level 0 is a leaf bitmap indexed by `key & 32767`. 15 + 5 * 9 = 60 >= 53 key bits,
and four table levels (51 bits) would not be enough, so the depth is fixed at six. Since
keys are below 2**53 the root only ever uses entries 0..3 (key bits 51 and 52). Since the
lowest order bit (34) lies above bit 32, a leaf and the level-1 and level-2 tables above it
each hold blocks of a single order: a leaf covers 32768 consecutive blocks of one order,
starting at a multiple of 32768 (128 MiB of order-0 pages; 128 leaves, 512 KiB, cover 16 GiB).

Bytes (little-endian, x86-64 native), every node exactly one 4 KiB page:
- table node (`struct kho_radix_node`): 512 u64 entries; entry i at byte offset 8 * i is the
  physical address of the child node for index i (page aligned, inside RAM), or 0 for no
  child. Tables hold nothing but pointers.
- leaf (`struct kho_radix_leaf`, a Linux bitmap of unsigned longs): bit b (0..32767) is bit
  `b & 7` of byte `b >> 3`; set means the block with key `(leaf key prefix << 15) | b` is
  preserved. Leaves are the only place bits live.
- the root FDT's `preserved-memory-map` property is the physical address of the root table;
  it is never 0 (an empty set is an all-zero root page).

Which frames hold which node is the writer's choice, not ABI: this writer takes one
contiguous extent (when RAM allows) and lays the nodes out top-down, level by level, keys
ascending, so it issues one `memory.write` and the reader one pread per level. Node pages
are ordinary allocations, not preserved: the next kernel walks them while it boots and they
are lost afterwards, exactly like `kho-v1`'s chunks. Cost grows with what is preserved,
never with RAM: an empty set writes the root page alone.

The reader validates every pointer (page aligned, inside RAM), refuses a node reachable
twice (a cycle back to an ancestor or a node shared by two entries), refuses entries whose
key range names no block of a valid order inside RAM (keys of 54+ bits: deeper than any
order bit; orders above MAX_ORDER; blocks past the end of RAM) and leaf bits past the end
of RAM. The walk is breadth-first and vectorised per level: no Python object per page.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import OutOfMemory
from luod.kernel_model.extents import Extents, Int64Array, block_runs
from luod.kernel_model.kho.memmap_v1 import MemMapCorrupt
from luod.kernel_model.kho.order_bitmap import CHUNK_SHIFT
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import MAX_ORDER, FrameAllocator

__all__ = ["COMPATIBLE", "MemMapCorrupt", "read", "write"]

COMPATIBLE = "kho-v2"

ORDER0_BIT = 64 - PAGE_SHIFT  # 52: the order bit of an order-0 key
KEY_BITS = ORDER0_BIT + 1  # 53: every key is below 2**KEY_BITS
MIN_ORDER_BIT = ORDER0_BIT - MAX_ORDER  # 34: the order bit of a MAX_ORDER key
TABLE_SHIFT = (PAGE_SIZE // 8).bit_length() - 1  # 9: a table page holds 512 u64 entries
TABLE_ENTRIES = 1 << TABLE_SHIFT
LEAF_SHIFT = PAGE_SHIFT + 3  # 15: a leaf page holds 32768 bits
LEAF_BITS = 1 << LEAF_SHIFT
TABLE_LEVELS = 5  # levels 5 (root) .. 1; level 0 is the leaf
TREE_BITS = LEAF_SHIFT + TABLE_LEVELS * TABLE_SHIFT  # 60
LEAVES_PER_CHUNK = (1 << CHUNK_SHIFT) // LEAF_BITS  # an in-memory chunk cuts into 8 leaves

# The arithmetic the docstring promises, checked where it is relied upon.
assert TREE_BITS - TABLE_SHIFT < KEY_BITS <= TREE_BITS, "five table levels, no more, no less"
assert MIN_ORDER_BIT >= LEAF_SHIFT + 2 * TABLE_SHIFT, "leaves (and L1, L2) hold one order"
assert LEAVES_PER_CHUNK * LEAF_BITS == 1 << CHUNK_SHIFT

U8Array = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]

_POWERS: Int64Array = np.left_shift(np.int64(1), np.arange(63, dtype=np.int64))


def _bit_length(values: Int64Array) -> Int64Array:
    """Exact `int.bit_length` of non-negative int64 values (no float rounding)."""
    return np.searchsorted(_POWERS, values, side="right").astype(np.int64)


# -- writer ---------------------------------------------------------------------------------


def _leaves(preserved: PreservedSet) -> tuple[Int64Array, U8Array]:
    """(leaf prefixes `key >> 15`, ascending; leaf pages (n, PAGE_SIZE)) of every non-empty
    leaf. Higher orders have lower order bits, hence smaller keys: walking orders from
    MAX_ORDER down and chunks upwards yields prefixes already sorted."""
    prefixes: list[Int64Array] = []
    pages: list[U8Array] = []
    for bitmap in reversed(preserved.orders):
        order_bit = 1 << (ORDER0_BIT - bitmap.order)
        for cid, chunk in bitmap.chunks():
            rows = chunk.reshape(LEAVES_PER_CHUNK, LEAF_BITS)
            used = np.flatnonzero(rows.any(axis=1))
            if not used.size:
                continue
            first_block = (cid << CHUNK_SHIFT) + (used.astype(np.int64) << LEAF_SHIFT)
            # block < 2**(52 - order) (PreservedSet keeps blocks inside RAM), so OR-ing in
            # the order bit cannot collide with a block bit.
            prefixes.append((first_block | order_bit) >> LEAF_SHIFT)
            pages.append(np.packbits(rows[used], axis=1, bitorder="little"))
    if not prefixes:
        return np.zeros(0, dtype=np.int64), np.zeros((0, PAGE_SIZE), dtype=np.uint8)
    return np.concatenate(prefixes), np.concatenate(pages)


def _parents(children: Int64Array) -> tuple[Int64Array, Int64Array]:
    """For sorted child prefixes one level down: (sorted unique parent prefixes, index of
    each child's parent in that array)."""
    up = children >> TABLE_SHIFT
    opens = np.ones(up.size, dtype=np.bool_)
    np.not_equal(up[1:], up[:-1], out=opens[1:])
    return up[opens], np.cumsum(opens, dtype=np.int64) - 1


def _alloc_pages(mm: FrameAllocator, npages: int) -> tuple[Int64Array, Extents]:
    """pfn of each of `npages` node pages: one contiguous extent if RAM has one, else
    first-fit single frames (the tree links pages by address, so any placement reads)."""
    try:
        first = mm.alloc_extent(npages)
    except OutOfMemory:
        runs = mm.alloc_folio_runs(0, npages)
        pfns = np.concatenate([s + np.arange(n, dtype=np.int64) for s, n in runs])
        return pfns, Extents.from_ranges([s for s, _ in runs], [s + n for s, n in runs])
    return first + np.arange(npages, dtype=np.int64), Extents.of(first, first + npages)


def write(
    preserved: PreservedSet, mm: FrameAllocator, memory: PhysicalMemory
) -> tuple[int, Extents]:
    """Serialise `preserved`; returns (phys of the root table, frames used by the tree)."""
    leaf_prefix, leaf_pages = _leaves(preserved)
    # prefixes[L] are the sorted key prefixes `key >> (15 + 9 * L)` of the level-L nodes
    # (level 0: leaves); parent_of[L] indexes each level-L node's parent in prefixes[L + 1].
    prefixes: list[Int64Array] = [leaf_prefix]
    parent_of: list[Int64Array] = []
    for _ in range(TABLE_LEVELS):
        up, index = _parents(prefixes[-1])
        prefixes.append(up)
        parent_of.append(index)
    # Keys are below 2**53 < 2**60, so every path meets at the single root, prefix 0; an
    # empty set still has its root.
    prefixes[TABLE_LEVELS] = np.zeros(1, dtype=np.int64)

    # Page layout: root, then level 4 .. level 1 tables, then leaves; first[L] is the
    # page index of the first level-L node.
    first: dict[int, int] = {}
    npages = 0
    for level in range(TABLE_LEVELS, -1, -1):
        first[level] = npages
        npages += prefixes[level].size
    ntables = first[0]

    pfns, used = _alloc_pages(mm, npages)
    image = np.zeros((npages, PAGE_SIZE), dtype=np.uint8)
    tables: U64Array = image[:ntables].view("<u8")
    for level in range(TABLE_LEVELS):  # fill the entries of level `level + 1` tables
        child_pages = first[level] + np.arange(prefixes[level].size, dtype=np.int64)
        rows = first[level + 1] + parent_of[level]
        slots = prefixes[level] & (TABLE_ENTRIES - 1)
        tables[rows, slots] = (pfns[child_pages] << PAGE_SHIFT).astype(np.uint64)
    image[ntables:] = leaf_pages

    # One write per contiguous run of node pages: one write in the common case.
    starts, lasts = block_runs(pfns)
    offsets = np.concatenate(([0], np.cumsum(lasts - starts + 1))).tolist()
    for pfn, (lo, hi) in zip(starts.tolist(), itertools.pairwise(offsets), strict=True):
        memory.write(pfn, image[lo:hi].reshape(-1).data)  # a view, no copy
    return int(pfns[0]) << PAGE_SHIFT, used


# -- reader ---------------------------------------------------------------------------------


class _Walk:
    """Bookkeeping of a walk: every node visited so far, to refuse one reached twice."""

    def __init__(self, root_phys: int) -> None:
        # per level (5 .. 0): phys and key prefix of each node visited at that level
        self.levels: dict[int, tuple[Int64Array, Int64Array]] = {
            TABLE_LEVELS: (np.array([root_phys], dtype=np.int64), np.zeros(1, dtype=np.int64))
        }
        self.seen: Int64Array = np.array([root_phys], dtype=np.int64)  # sorted

    def admit(self, level: int, child: Int64Array, prefix: Int64Array, parent: Int64Array) -> None:
        """Record the level-`level` nodes `child` (phys, sorted by prefix) reached from the
        level-`level + 1` nodes `parent`; raise if any was reached before."""
        order = np.argsort(child, kind="stable")
        ranked = child[order]
        twice = np.flatnonzero(ranked[1:] == ranked[:-1])
        if twice.size:
            a, b = order[twice[0]], order[twice[0] + 1]
            raise MemMapCorrupt(
                f"shared node: page {int(child[a]):#x} is reachable twice, from level-"
                f"{level + 1} nodes at {int(parent[a]):#x} and {int(parent[b]):#x}"
            )
        at = np.minimum(np.searchsorted(self.seen, child), self.seen.size - 1)
        again = np.flatnonzero(self.seen[at] == child)
        if again.size:
            self._refuse_revisit(level, int(child[again[0]]), int(parent[again[0]]), prefix)
        self.levels[level] = (child, prefix)
        merged = np.concatenate((self.seen, ranked))
        self.seen = np.sort(merged, kind="stable")

    def _refuse_revisit(self, level: int, target: int, parent: int, prefix: Int64Array) -> None:
        for old_level, (phys, old_prefix) in self.levels.items():
            hit = np.flatnonzero(phys == target)
            if not hit.size:
                continue
            parent_phys, parent_prefix = self.levels[level + 1]
            p = int(parent_prefix[np.flatnonzero(parent_phys == parent)[0]])
            shift = TABLE_SHIFT * (old_level - (level + 1))
            if shift >= 0 and p >> shift == int(old_prefix[hit[0]]):
                raise MemMapCorrupt(
                    f"cycle: level-{level + 1} node at {parent:#x} points back to its "
                    f"ancestor, the level-{old_level} node at {target:#x}"
                )
            raise MemMapCorrupt(
                f"shared node: page {target:#x} is reachable twice, from the level-"
                f"{level + 1} node at {parent:#x} and as a level-{old_level} node"
            )
        raise AssertionError("revisit of a page never visited")  # pragma: no cover


def _valid_key_ranges(frames: int) -> tuple[Int64Array, Int64Array]:
    """[lo, hi) of the keys naming a block inside RAM, one range per order that has any."""
    orders = np.arange(MAX_ORDER + 1, dtype=np.int64)
    lo = np.left_shift(np.int64(1), ORDER0_BIT - orders)
    hi = lo + (frames >> orders)
    keep = hi > lo
    return lo[keep], hi[keep]


def _why_no_block(lo: int, hi: int) -> str:
    if lo >= 1 << KEY_BITS:
        return f"keys of {KEY_BITS + 1}+ bits, too deep for any order bit (at most bit 52)"
    if hi <= 1 << MIN_ORDER_BIT:
        return f"order bit below bit {MIN_ORDER_BIT}, i.e. an order above {MAX_ORDER}"
    return "only blocks beyond the end of RAM"


def read(memory: PhysicalMemory, phys: int) -> PreservedSet:
    """Walk the tree whose root table is at `phys` into the set of preserved blocks.

    Raises MemMapCorrupt for a pointer misaligned or outside RAM, a node reachable twice
    (cycle or shared), an entry naming no valid block in RAM, or leaf bits beyond RAM."""
    size = memory.size_bytes
    if phys == 0:
        raise MemMapCorrupt("radix tree root is 0: the handover names no tree")
    if phys < 0 or phys % PAGE_SIZE or phys + PAGE_SIZE > size:
        raise MemMapCorrupt(f"radix tree root {phys:#x} is misaligned or outside RAM")
    valid_lo, valid_hi = _valid_key_ranges(memory.frames)
    walk = _Walk(phys)
    nodes, prefix = walk.levels[TABLE_LEVELS]
    for level in range(TABLE_LEVELS, 0, -1):
        tables = memory.gather(nodes, PAGE_SIZE).view("<u8")
        rows, slots = np.nonzero(tables)  # row-major: children come out sorted by key
        entry = tables[rows, slots]
        parent = nodes[rows]
        # Unsigned compares: an entry of 2**63 or more is outside RAM, not negative.
        bad = (entry % PAGE_SIZE != 0) | (entry > size - PAGE_SIZE)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "misaligned" if int(entry[i]) % PAGE_SIZE else "outside RAM"
            raise MemMapCorrupt(
                f"level-{level} node at {int(parent[i]):#x} entry {int(slots[i])}: pointer "
                f"{int(entry[i]):#x} is {what} (RAM is {size:#x} bytes)"
            )
        child = entry.astype(np.int64)
        child_prefix = (prefix[rows] << TABLE_SHIFT) | slots.astype(np.int64)
        # Each entry covers keys [lo, hi); it must name at least one block of a valid order
        # inside RAM. This bounds the walk by RAM size whatever the tree claims.
        shift = LEAF_SHIFT + TABLE_SHIFT * (level - 1)
        lo, hi = child_prefix << shift, (child_prefix + 1) << shift
        names = ((lo[:, None] < valid_hi) & (hi[:, None] > valid_lo)).any(axis=1)
        if not names.all():
            i = int(np.flatnonzero(~names)[0])
            raise MemMapCorrupt(
                f"level-{level} node at {int(parent[i]):#x} entry {int(slots[i])} covers keys "
                f"[{int(lo[i]):#x}, {int(hi[i]):#x}): {_why_no_block(int(lo[i]), int(hi[i]))}"
            )
        walk.admit(level - 1, child, child_prefix, parent)
        nodes, prefix = child, child_prefix
    return _load_leaves(memory, nodes, prefix)


def _load_leaves(memory: PhysicalMemory, leaves: Int64Array, prefix: Int64Array) -> PreservedSet:
    """Turn the leaves (phys, key prefix `key >> 15`, ascending) into a PreservedSet."""
    preserved = PreservedSet(memory.frames)
    if not leaves.size:
        return preserved
    pages = memory.gather(leaves, PAGE_SIZE)
    key0 = prefix << LEAF_SHIFT  # key of each leaf's bit 0
    order = ORDER0_BIT + 1 - _bit_length(key0)  # every key's highest bit is its order bit
    first_block = key0 ^ np.left_shift(np.int64(1), ORDER0_BIT - order)
    # The entry checks guarantee each leaf starts inside RAM at a valid order; a leaf
    # straddling the end of RAM (at most one per order) must leave the bits past it clear.
    room = (memory.frames >> order) - first_block
    for row in np.flatnonzero(room < LEAF_BITS).tolist():
        row_bits = np.unpackbits(pages[row], bitorder="little")
        past = np.flatnonzero(row_bits[int(room[row]) :])
        if past.size:
            block = int(first_block[row]) + int(room[row]) + int(past[0])
            raise MemMapCorrupt(
                f"leaf at {int(leaves[row]):#x} marks order-{int(order[row])} block "
                f"{block:#x} beyond the end of RAM"
            )
    # Leaves are sorted by key, and keys by descending order: each order is one slice.
    cuts = np.flatnonzero(np.diff(order)) + 1
    for lo, hi in itertools.pairwise([0, *cuts.tolist(), leaves.size]):
        bits = np.unpackbits(pages[lo:hi], axis=1, bitorder="little").view(np.bool_)
        preserved.orders[int(order[lo])].load(first_block[lo:hi], bits)
    return preserved
