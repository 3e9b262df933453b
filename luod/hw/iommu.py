"""The IOMMU: per-device context registers and a page-table walker over emulated RAM.

This module owns the I/O page-table *format* and the hardware that walks it. The point of
modelling it at byte level is the one rule of the emulation: a device keeps doing DMA
across a kexec only if the pages holding its I/O page tables survive in RAM. The walker
reads table entries from physical memory on every translation, so if the next kernel did
not preserve a table page (it was released, i.e. punched to a hole that reads as zero), the
walk finds a not-present entry and the device faults. Nothing here is cached across calls:
there is no IOTLB that could keep a lost mapping alive.

Page-table format (byte-exact; modelled on x86 / VT-d second-level paging):

- An I/O virtual address (IOVA) has 48 bits. Translation walks 4 levels; level 4 is the root.
  Level L indexes with IOVA bits [12 + 9*L - 1 : 12 + 9*(L-1)], i.e. bits 47:39 (L4),
  38:30 (L3), 29:21 (L2), 20:12 (L1). The low 12 bits are the offset in a 4 KiB page.
- A table is one 4 KiB page (any pfn) holding 512 entries, each a little-endian u64;
  entry i lives at byte offset 8*i.
- Entry bits: 0 PRESENT (readable), 1 WRITE, 7 LEAF (huge page), 12..51 the frame number
  (`entry = (pfn << 12) | flags`). Every other bit is reserved and must be zero.
- At level 4 an entry always points at a level-3 table (LEAF is reserved). At levels 3 and
  2 an entry either points at the next table (LEAF clear) or maps a 1 GiB (L3) / 2 MiB (L2)
  leaf whose frame number must be aligned to the leaf size. At level 1 an entry maps a
  4 KiB page (LEAF is reserved).
- Write permission is the AND of WRITE over every entry of the walk, as on x86; the
  builder below always sets WRITE on table entries, so a leaf's WRITE bit decides.
- A zero entry is not present. A fresh table page is a hole (reads as zero), so a freshly
  allocated table maps nothing.

The context table (which device uses which domain root) is a set of hardware registers and
is kept as a dict keyed by BDF: it survives a kexec as any register does. Faults are counted
per device and per reason.

`PageTableBuilder` is the software half: the code that writes tables in this format (in
Linux, the IOMMU driver's io-pgtable). It lives here, next to the walker, so the format is
defined in exactly one module; it is pure mechanism with no state of its own (frames come
from and go back to the caller's allocator through callbacks), and the kernel model decides
what to map, when, and which table pages to preserve. Reads of RAM always go through pread
(`read`, `read_at`, `gather`), never through the mapping, so walking a lost table never
makes its hole resident again.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

Int64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
U8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]

IOVA_BITS = 48
IOVA_LIMIT = 1 << IOVA_BITS
LEVELS = 4
ENTRIES_PER_TABLE = 512
ENTRY_SIZE = 8

PTE_PRESENT = 0x1
PTE_WRITE = 0x2
PTE_LEAF = 0x80
PTE_ADDR_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)  # bits 12..51
PTE_RESERVED = ((1 << 64) - 1) & ~(PTE_ADDR_MASK | PTE_PRESENT | PTE_WRITE | PTE_LEAF)

SIZE_4K = 1 << 12
SIZE_2M = 1 << 21
SIZE_1G = 1 << 30
PAGE_SIZES = (SIZE_4K, SIZE_2M, SIZE_1G)

_BDF_RE = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")


def parse_bdf(text: str) -> str:
    """The canonical (lowercase) form of a PCI address "DDDD:BB:DD.F"; ValueError if bad."""
    bdf = text.lower()
    match = _BDF_RE.fullmatch(bdf)
    if match is None or int(match.group(3), 16) > 0x1F:
        raise ValueError(f"{text!r} is not a PCI address of the form 0000:01:00.0")
    return bdf


def level_shift(level: int) -> int:
    """Bit position of the lowest IOVA bit indexing a level-`level` table."""
    return PAGE_SHIFT + 9 * (level - 1)


def entry_span(level: int) -> int:
    """Bytes of IOVA covered by one entry of a level-`level` table."""
    return 1 << level_shift(level)


class FaultReason(enum.IntEnum):
    """Why a translation faulted. Values are the codes `translate_pages` returns (0 = ok)."""

    NO_DOMAIN = 1  # the device's context entry points at no domain
    NOT_PRESENT = 2  # an entry of the walk has PRESENT clear
    READ_ONLY = 3  # a write through a walk that lacks WRITE somewhere
    MALFORMED = 4  # a reserved bit set, LEAF where not allowed, or a misaligned huge leaf
    BAD_ADDRESS = 5  # an entry points at a table or leaf outside RAM
    OUT_OF_RANGE = 6  # the IOVA is outside the 48-bit space

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class IommuFault(Exception):
    """A DMA transaction the IOMMU refused. Counted against `bdf` before it is raised."""

    def __init__(self, bdf: str, iova: int, write: bool, reason: FaultReason) -> None:
        self.bdf = bdf
        self.iova = iova
        self.write = write
        self.reason = reason
        access = "write" if write else "read"
        super().__init__(f"{bdf}: IOMMU fault ({reason.label}) on {access} at iova {iova:#x}")


class Segment(NamedTuple):
    """A physically contiguous piece of a translation: `nbytes` starting `offset` bytes
    into frame `pfn` (offset < 4096; nbytes may run over many frames)."""

    pfn: int
    offset: int
    nbytes: int


class PageTranslation(NamedTuple):
    """Result of a vectorised translation: per input page, the frame (or -1) and the fault
    code (0 if it translated, else a `FaultReason` value)."""

    pfns: Int64Array
    faults: U8Array


def _append(segments: list[Segment], phys: int, nbytes: int) -> None:
    """Add [phys, phys + nbytes) to a translation, merging with a physically adjacent
    previous piece."""
    if segments:
        last = segments[-1]
        if (last.pfn << PAGE_SHIFT) + last.offset + last.nbytes == phys:
            segments[-1] = last._replace(nbytes=last.nbytes + nbytes)
            return
    segments.append(Segment(phys >> PAGE_SHIFT, phys & (PAGE_SIZE - 1), nbytes))


class _WalkFault(Exception):
    def __init__(self, reason: FaultReason) -> None:
        self.reason = reason


class Iommu:
    """Context registers (BDF -> domain root pfn), the walker, and fault counters."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self._memory = memory
        self._contexts: dict[str, int] = {}
        self._faults: dict[str, Counter[FaultReason]] = {}

    # -- context registers -----------------------------------------------------------------

    def attach(self, bdf: str, root_pfn: int) -> None:
        """Point `bdf`'s context entry at the domain whose level-4 table is `root_pfn`
        (replacing any previous domain, as rewriting a context entry does)."""
        bdf = parse_bdf(bdf)
        if not 0 <= root_pfn < self._memory.frames:
            raise ValueError(f"domain root {root_pfn:#x} outside RAM")
        self._contexts[bdf] = root_pfn

    def detach(self, bdf: str) -> None:
        """Clear `bdf`'s context entry; its DMA faults from now on. Idempotent."""
        self._contexts.pop(parse_bdf(bdf), None)

    def root_of(self, bdf: str) -> int | None:
        return self._contexts.get(parse_bdf(bdf))

    def contexts(self) -> dict[str, int]:
        """A copy of the context table."""
        return dict(self._contexts)

    def reset(self) -> None:
        """Power-on state: no context entries, no faults recorded."""
        self._contexts.clear()
        self._faults.clear()

    # -- fault counters --------------------------------------------------------------------

    def fault_count(self, bdf: str) -> int:
        return sum(self._faults.get(parse_bdf(bdf), Counter()).values())

    def fault_counts(self, bdf: str) -> dict[FaultReason, int]:
        return dict(self._faults.get(parse_bdf(bdf), Counter()))

    def _count(self, bdf: str, reason: FaultReason, n: int = 1) -> None:
        self._faults.setdefault(bdf, Counter())[reason] += n

    # -- translation -----------------------------------------------------------------------

    def translate(self, bdf: str, iova: int, length: int, write: bool) -> list[Segment]:
        """Translate a DMA of `length` bytes at `iova` for device `bdf`, as the device sees
        it: a fault is counted against the device and raised as `IommuFault`."""
        bdf = parse_bdf(bdf)
        try:
            return self._translate(bdf, iova, length, write)
        except IommuFault as fault:
            self._count(bdf, fault.reason)
            raise

    def lookup(self, bdf: str, iova: int, length: int, write: bool) -> list[Segment]:
        """The same walk as `translate` but a fault is not counted: an observer's probe
        (tests, verification), not a device transaction."""
        return self._translate(parse_bdf(bdf), iova, length, write)

    def _translate(self, bdf: str, iova: int, length: int, write: bool) -> list[Segment]:
        if iova < 0 or length < 0:
            raise ValueError(f"negative iova {iova:#x} or length {length}")
        root = self._contexts.get(bdf)
        if root is None:
            raise IommuFault(bdf, iova, write, FaultReason.NO_DOMAIN)
        if iova + length > IOVA_LIMIT:
            raise IommuFault(bdf, max(iova, IOVA_LIMIT), write, FaultReason.OUT_OF_RANGE)
        segments: list[Segment] = []
        end = iova + length
        cur = iova
        while cur < end:
            try:
                phys, left = self._walk(root, cur, write)
            except _WalkFault as exc:
                raise IommuFault(bdf, cur, write, exc.reason) from None
            if left > PAGE_SIZE or end - cur <= left:
                # A huge leaf, or the request ends in this page: one piece.
                n = min(left, end - cur)
                _append(segments, phys, n)
                cur += n
                continue
            # A 4 KiB leaf with more to go: walk the rest of this level-1 table's pages in
            # one batch (one read per level) rather than one walk per page. Same entries
            # read, same checks, same first fault.
            stop = min(end, (cur | (SIZE_2M - 1)) + 1)
            pages = np.arange(cur >> PAGE_SHIFT, ((stop - 1) >> PAGE_SHIFT) + 1, dtype=np.int64)
            pfns = np.full(pages.size, -1, dtype=np.int64)
            faults = np.zeros(pages.size, dtype=np.uint8)
            self._walk_pages(root, pages, write, pfns, faults)
            bad = np.flatnonzero(faults)
            good = int(bad[0]) if bad.size else int(pages.size)
            breaks = (np.flatnonzero(np.diff(pfns[:good]) != 1) + 1).tolist()
            for a, b in itertools.pairwise([0, *breaks, good] if good else []):
                first = (int(pfns[a]) << PAGE_SHIFT) + (cur & (PAGE_SIZE - 1) if a == 0 else 0)
                tail = ((stop - 1) & (PAGE_SIZE - 1)) + 1 if b == pages.size else PAGE_SIZE
                _append(segments, first, (int(pfns[b - 1]) << PAGE_SHIFT) + tail - first)
            if bad.size:
                where = max(cur, int(pages[good]) << PAGE_SHIFT)
                raise IommuFault(bdf, where, write, FaultReason(int(faults[good])))
            cur = stop
        return segments

    def _walk(self, root: int, iova: int, write: bool) -> tuple[int, int]:
        """(physical address of `iova`, bytes from there to the end of its leaf)."""
        memory = self._memory
        table = root
        writable = True
        for level in range(LEVELS, 0, -1):
            if table >= memory.frames:
                raise _WalkFault(FaultReason.BAD_ADDRESS)
            index = (iova >> level_shift(level)) & (ENTRIES_PER_TABLE - 1)
            raw = memory.read_at((table << PAGE_SHIFT) + index * ENTRY_SIZE, ENTRY_SIZE)
            entry = int.from_bytes(raw, "little")
            if not entry & PTE_PRESENT:
                raise _WalkFault(FaultReason.NOT_PRESENT)
            if entry & PTE_RESERVED:
                raise _WalkFault(FaultReason.MALFORMED)
            writable = writable and bool(entry & PTE_WRITE)
            pfn = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
            huge = bool(entry & PTE_LEAF)
            if huge and level in (1, LEVELS):
                raise _WalkFault(FaultReason.MALFORMED)
            if not huge and level > 1:
                table = pfn
                continue
            size = entry_span(level)
            if pfn & ((size >> PAGE_SHIFT) - 1):
                raise _WalkFault(FaultReason.MALFORMED)
            if pfn + (size >> PAGE_SHIFT) > memory.frames:
                raise _WalkFault(FaultReason.BAD_ADDRESS)
            if write and not writable:
                raise _WalkFault(FaultReason.READ_ONLY)
            offset = iova & (size - 1)
            return (pfn << PAGE_SHIFT) + offset, size - offset
        raise AssertionError("unreachable: level 1 always ends the walk")

    def translate_pages(
        self,
        bdf: str,
        pages: Int64Array,
        write: bool,
        weights: Int64Array | None = None,
    ) -> PageTranslation:
        """Translate many IOVA page numbers (iova >> 12) at once, one walk per page, level
        by level with one batched read per level. `weights[i]` is how many device
        transactions page i stands for (default 1): faults are counted with that weight.

        This is how a device that issues many writes in one time step is modelled: the
        tables cannot change inside one step (the machine is single-threaded), so walking
        each distinct page once gives exactly what walking per transaction would.
        """
        bdf = parse_bdf(bdf)
        pages = np.asarray(pages, dtype=np.int64)
        n = pages.size
        pfns = np.full(n, -1, dtype=np.int64)
        faults = np.zeros(n, dtype=np.uint8)
        root = self._contexts.get(bdf)
        if root is None:
            faults[:] = FaultReason.NO_DOMAIN
        else:
            self._walk_pages(root, pages, write, pfns, faults)
        if n:
            w = np.ones(n, dtype=np.int64) if weights is None else np.asarray(weights, np.int64)
            for code in np.unique(faults[faults != 0]).tolist():
                self._count(bdf, FaultReason(code), int(w[faults == code].sum()))
        return PageTranslation(pfns, faults)

    def _walk_pages(
        self, root: int, pages: Int64Array, write: bool, pfns: Int64Array, faults: U8Array
    ) -> None:
        memory = self._memory
        out_of_range = (pages < 0) | (pages >= IOVA_LIMIT >> PAGE_SHIFT)
        faults[out_of_range] = FaultReason.OUT_OF_RANGE
        lanes = np.flatnonzero(~out_of_range)  # indices into pages still walking
        iova = pages[lanes] << PAGE_SHIFT
        table = np.full(lanes.size, root, dtype=np.int64)
        writable = np.ones(lanes.size, dtype=np.bool_)
        for level in range(LEVELS, 0, -1):
            if not lanes.size:
                return
            bad_table = table >= memory.frames
            faults[lanes[bad_table]] = FaultReason.BAD_ADDRESS
            keep = ~bad_table
            lanes, iova, table, writable = lanes[keep], iova[keep], table[keep], writable[keep]
            index = (iova >> level_shift(level)) & (ENTRIES_PER_TABLE - 1)
            addr = (table << PAGE_SHIFT) + index * ENTRY_SIZE
            # One pread per run of adjacent entries (gather), each distinct entry read once.
            unique_addr, inverse = np.unique(addr, return_inverse=True)
            raw = memory.gather(unique_addr.astype(np.int64), ENTRY_SIZE)
            entry = raw.view("<u8").reshape(-1)[inverse.reshape(-1)]
            present = (entry & np.uint64(PTE_PRESENT)) != 0
            reserved = (entry & np.uint64(PTE_RESERVED)) != 0
            huge = (entry & np.uint64(PTE_LEAF)) != 0
            writable &= (entry & np.uint64(PTE_WRITE)) != 0
            target = ((entry & np.uint64(PTE_ADDR_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
            # Same checks in the same order as `_walk`; a lane fails with the first one.
            malformed = present & (reserved | huge) if level in (1, LEVELS) else present & reserved
            valid = present & ~malformed
            leaf = valid if level == 1 else valid & huge
            span_pages = entry_span(level) >> PAGE_SHIFT
            misaligned = leaf & ((target & (span_pages - 1)) != 0)
            outside = leaf & ~misaligned & (target + span_pages > memory.frames)
            allowed = leaf & ~misaligned & ~outside
            read_only = allowed & ~writable if write else np.zeros_like(allowed)
            done = allowed & ~read_only
            faults[lanes[~present]] = FaultReason.NOT_PRESENT
            faults[lanes[malformed | misaligned]] = FaultReason.MALFORMED
            faults[lanes[outside]] = FaultReason.BAD_ADDRESS
            faults[lanes[read_only]] = FaultReason.READ_ONLY
            offset_pages = (iova >> PAGE_SHIFT) & (span_pages - 1)
            pfns[lanes[done]] = target[done] + offset_pages[done]
            descend = valid & ~leaf
            lanes, iova, table, writable = (
                lanes[descend],
                iova[descend],
                target[descend],
                writable[descend],
            )

    # -- registers as data (for Machine.dump/load) -----------------------------------------

    def to_registers(self) -> dict[str, object]:
        return {
            "contexts": dict(self._contexts),
            "faults": {
                bdf: {reason.label: count for reason, count in counter.items()}
                for bdf, counter in self._faults.items()
            },
        }

    def load_registers(self, registers: dict[str, object]) -> None:
        self.reset()
        contexts = registers.get("contexts", {})
        faults = registers.get("faults", {})
        assert isinstance(contexts, dict) and isinstance(faults, dict)
        for bdf, root in contexts.items():
            self.attach(str(bdf), int(root))
        by_label = {reason.label: reason for reason in FaultReason}
        for bdf, counts in faults.items():
            assert isinstance(counts, dict)
            for label, count in counts.items():
                self._count(parse_bdf(str(bdf)), by_label[str(label)], int(count))


# -- software side: writing tables in the format above ---------------------------------------


class MappingError(ValueError):
    """A map or unmap the page tables cannot express (overlap, split of a huge leaf,
    misalignment, out of range)."""


class Leaves(NamedTuple):
    """Every leaf of a domain, sorted by IOVA, as parallel arrays (never one object per
    page): IOVA, first frame, size in bytes, and effective write permission."""

    iova: Int64Array
    pfn: Int64Array
    size: Int64Array
    write: BoolArray


def _read_table(memory: PhysicalMemory, table_pfn: int) -> U64Array:
    if not 0 <= table_pfn < memory.frames:
        raise MappingError(f"table page {table_pfn:#x} outside RAM")
    return np.frombuffer(memory.read(table_pfn), dtype="<u8").astype(np.uint64)


def _children(entries: U64Array) -> tuple[Int64Array, Int64Array]:
    """(indices, pfns) of the present non-leaf entries of a table above level 1."""
    mask = ((entries & np.uint64(PTE_PRESENT)) != 0) & ((entries & np.uint64(PTE_LEAF)) == 0)
    index = np.flatnonzero(mask)
    pfn = ((entries[index] & np.uint64(PTE_ADDR_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    return index.astype(np.int64), pfn


def table_pages(memory: PhysicalMemory, root_pfn: int) -> Int64Array:
    """Every page holding a table of the domain rooted at `root_pfn` (root included),
    sorted: exactly the frames a kernel must preserve for the domain's DMA to keep
    translating after a kexec."""
    found = [np.array([root_pfn], dtype=np.int64)]
    frontier = [root_pfn]
    for _level in range(LEVELS, 1, -1):
        next_frontier: list[int] = []
        for table in frontier:
            _, pfns = _children(_read_table(memory, table))
            found.append(pfns)
            next_frontier.extend(pfns.tolist())
        frontier = next_frontier
    return np.unique(np.concatenate(found))


def leaves(memory: PhysicalMemory, root_pfn: int) -> Leaves:
    """Every mapping of the domain rooted at `root_pfn`. Cost grows with table pages."""
    parts: list[tuple[Int64Array, Int64Array, Int64Array, BoolArray]] = []

    def visit(table: int, level: int, base: int, writable: bool) -> None:
        entries = _read_table(memory, table)
        present = (entries & np.uint64(PTE_PRESENT)) != 0
        huge = (entries & np.uint64(PTE_LEAF)) != 0
        is_leaf = present & huge if level > 1 else present
        index = np.flatnonzero(is_leaf)
        if index.size:
            e = entries[index]
            parts.append(
                (
                    base + index.astype(np.int64) * entry_span(level),
                    ((e & np.uint64(PTE_ADDR_MASK)) >> np.uint64(PAGE_SHIFT)).astype(np.int64),
                    np.full(index.size, entry_span(level), dtype=np.int64),
                    ((e & np.uint64(PTE_WRITE)) != 0) & writable,
                )
            )
        if level > 1:
            child_index, child_pfn = _children(entries)
            for i, child in zip(child_index.tolist(), child_pfn.tolist(), strict=True):
                child_writable = writable and bool(int(entries[i]) & PTE_WRITE)
                visit(child, level - 1, base + i * entry_span(level), child_writable)

    visit(root_pfn, LEVELS, 0, True)
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Leaves(empty, empty.copy(), empty.copy(), np.zeros(0, dtype=np.bool_))
    iova, pfn, size, write = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(iova, kind="stable")
    return Leaves(iova[order], pfn[order], size[order], write[order].astype(np.bool_))


class LeafRun(NamedTuple):
    level: int  # leaf level: 1 (4K), 2 (2M), 3 (1G)
    iova: int
    pfn: int
    nleaves: int  # consecutive leaves of that level, physically contiguous


def plan_leaves(iova: int, runs: Iterable[tuple[int, int]], max_page: int) -> list[LeafRun]:
    """Split runs of frames mapped back to back from `iova` into leaves of the largest size
    that fits: a leaf of size S needs iova % S == 0, phys % S == 0 and S bytes left in the
    run. This equals choosing greedily page by page. Cost is O(number of runs)."""
    segments: list[LeafRun] = []
    cur = iova >> PAGE_SHIFT
    sizes = [s >> PAGE_SHIFT for s in PAGE_SIZES if s <= max_page]  # in pages, ascending

    def emit(level: int, start: int, pfn: int, npages: int) -> None:
        if npages > 0:
            per = entry_span(level) >> PAGE_SHIFT
            segments.append(LeafRun(level, start << PAGE_SHIFT, pfn, npages // per))

    def split(start: int, pfn: int, npages: int, size_index: int) -> None:
        # Cover [start, start + npages) with leaves of sizes[size_index] where both
        # addresses allow it and smaller leaves for the head and tail.
        if size_index == 0:
            emit(1, start, pfn, npages)
            return
        size = sizes[size_index]
        end = start + npages
        lo = -(-start // size) * size
        hi = end // size * size
        if (start - pfn) % size or lo >= hi:
            split(start, pfn, npages, size_index - 1)
            return
        split(start, pfn, lo - start, size_index - 1)
        emit(size_index + 1, lo, pfn + (lo - start), hi - lo)
        split(hi, pfn + (hi - start), end - hi, size_index - 1)

    for pfn, npages in runs:
        split(cur, pfn, npages, len(sizes) - 1)
        cur += npages
    return segments


class PageTableBuilder:
    """Writes and edits I/O page tables in the format above (driver-side mechanism).

    Table pages come from `alloc_page()` (any free frame; the builder punches it to zero)
    and go back through `free_page(pfn)` when a table becomes empty. Invariant kept by
    `map` and `unmap`: a present table entry always leads to at least one leaf, so every
    table page of a domain is needed and `table_pages` lists nothing stale.
    """

    def __init__(
        self,
        memory: PhysicalMemory,
        alloc_page: Callable[[], int],
        free_page: Callable[[int], None],
    ) -> None:
        self._memory = memory
        self._alloc_page = alloc_page
        self._free_page = free_page

    def _new_table(self) -> int:
        pfn = self._alloc_page()
        if not 0 <= pfn < self._memory.frames:
            raise MappingError(f"allocator returned frame {pfn:#x} outside RAM")
        self._memory.zero(pfn)  # a hole: all entries not present, no host memory used
        return pfn

    def _release_table(self, pfn: int) -> None:
        self._memory.zero(pfn)
        self._free_page(pfn)

    def create_root(self) -> int:
        """A new, empty domain: its level-4 table page."""
        return self._new_table()

    def destroy(self, root_pfn: int) -> None:
        """Free every table page of the domain (its mappings vanish with them)."""
        for pfn in table_pages(self._memory, root_pfn).tolist():
            self._release_table(pfn)

    def table_pages(self, root_pfn: int) -> Int64Array:
        return table_pages(self._memory, root_pfn)

    def leaves(self, root_pfn: int) -> Leaves:
        return leaves(self._memory, root_pfn)

    # -- map ---------------------------------------------------------------------------------

    def map(
        self,
        root_pfn: int,
        iova: int,
        runs: Iterable[tuple[int, int]],
        *,
        write: bool = True,
        max_page: int = SIZE_1G,
    ) -> int:
        """Map the frame runs `(pfn, npages)` back to back from `iova`, with leaves up to
        `max_page` bytes. All or nothing: MappingError if any part is already mapped (no
        table is touched then); if the allocator fails midway, what was mapped is undone.
        Returns the bytes mapped. Cost: O(runs + table pages written)."""
        memory = self._memory
        if max_page not in PAGE_SIZES:
            raise MappingError(f"max_page {max_page} is not one of {PAGE_SIZES}")
        if iova < 0 or iova % PAGE_SIZE:
            raise MappingError(f"iova {iova:#x} is not page aligned")
        run_list = [(int(p), int(n)) for p, n in runs]
        total = 0
        for pfn, npages in run_list:
            if npages <= 0 or pfn < 0 or pfn + npages > memory.frames:
                raise MappingError(f"bad run of {npages} frames at {pfn:#x}")
            total += npages << PAGE_SHIFT
        if iova + total > IOVA_LIMIT:
            raise MappingError(f"[{iova:#x}, {iova + total:#x}) outside the 48-bit IOVA space")
        segments = plan_leaves(iova, run_list, max_page)
        flags = PTE_PRESENT | (PTE_WRITE if write else 0)
        self._check_free(root_pfn, segments)
        cache: dict[tuple[int, int], int] = {}
        try:
            for seg in segments:
                self._write_segment(root_pfn, seg, flags, cache)
        except BaseException:
            # The range was entirely unmapped before; unmapping it restores that and frees
            # any table created on the way.
            self.unmap(root_pfn, iova, total)
            raise
        return total

    def _entry(self, table: int, index: int) -> int:
        raw = self._memory.read_at((table << PAGE_SHIFT) + index * ENTRY_SIZE, ENTRY_SIZE)
        return int.from_bytes(raw, "little")

    def _set_entry(self, table: int, index: int, value: int) -> None:
        self._memory.write(table, value.to_bytes(ENTRY_SIZE, "little"), index * ENTRY_SIZE)

    def _table_at(
        self, root: int, level: int, iova: int, cache: dict[tuple[int, int], int], create: bool
    ) -> int | None:
        """The level-`level` table covering `iova`, creating missing tables if `create`;
        None if absent and not creating. MappingError if a huge leaf is in the way."""
        table = root
        for upper in range(LEVELS, level, -1):
            key = (upper - 1, iova >> level_shift(upper))
            cached = cache.get(key)
            if cached is not None:
                table = cached
                continue
            index = (iova >> level_shift(upper)) & (ENTRIES_PER_TABLE - 1)
            entry = self._entry(table, index)
            if entry & PTE_PRESENT:
                if entry & PTE_LEAF:
                    raise MappingError(f"iova {iova:#x} is already mapped by a huge leaf")
                table = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
            elif create:
                child = self._new_table()
                self._set_entry(table, index, (child << PAGE_SHIFT) | PTE_PRESENT | PTE_WRITE)
                table = child
            else:
                return None
            cache[key] = table
        return table

    def _pieces(self, seg: LeafRun) -> Iterable[tuple[int, int, int, int]]:
        """(iova, first pfn, first index, count) per table the segment's entries fall in."""
        span = entry_span(seg.level)
        per = span >> PAGE_SHIFT
        done = 0
        while done < seg.nleaves:
            iova = seg.iova + done * span
            index = (iova >> level_shift(seg.level)) & (ENTRIES_PER_TABLE - 1)
            count = min(seg.nleaves - done, ENTRIES_PER_TABLE - index)
            yield iova, seg.pfn + done * per, index, count
            done += count

    def _check_free(self, root: int, segments: list[LeafRun]) -> None:
        cache: dict[tuple[int, int], int] = {}
        tables: dict[int, U64Array] = {}
        for seg in segments:
            for iova, _pfn, index, count in self._pieces(seg):
                table = self._table_at(root, seg.level, iova, cache, create=False)
                if table is None:
                    continue
                entries = tables.get(table)
                if entries is None:
                    entries = tables[table] = _read_table(self._memory, table)
                if entries[index : index + count].any():
                    raise MappingError(f"iova {iova:#x} is already mapped")

    def _write_segment(
        self, root: int, seg: LeafRun, flags: int, cache: dict[tuple[int, int], int]
    ) -> None:
        per = entry_span(seg.level) >> PAGE_SHIFT
        leaf_flags = flags | (PTE_LEAF if seg.level > 1 else 0)
        for iova, pfn, index, count in self._pieces(seg):
            table = self._table_at(root, seg.level, iova, cache, create=True)
            assert table is not None
            values = ((pfn + np.arange(count, dtype=np.int64) * per) << PAGE_SHIFT) | leaf_flags
            view = self._memory.view(table).view("<u8")
            view[index : index + count] = values.astype(np.uint64)

    # -- unmap -------------------------------------------------------------------------------

    def unmap(self, root_pfn: int, iova: int, length: int) -> int:
        """Remove every leaf inside [iova, iova + length) and free tables left empty.
        Holes in the range are fine; a huge leaf that sticks out of the range is refused
        (MappingError, nothing changed), as leaves are never split. Returns bytes unmapped."""
        if iova < 0 or length < 0 or (iova | length) % PAGE_SIZE:
            raise MappingError(f"unmap [{iova:#x}, +{length:#x}) is not page aligned")
        if iova + length > IOVA_LIMIT:
            raise MappingError(f"unmap [{iova:#x}, +{length:#x}) outside the IOVA space")
        if not length:
            return 0
        end = iova + length
        for point in (iova, end - 1):
            leaf = self._leaf_containing(root_pfn, point)
            if leaf is not None and (leaf[0] < iova or leaf[0] + leaf[1] > end):
                raise MappingError(
                    f"unmap [{iova:#x}, {end:#x}) would split the {leaf[1]:#x}-byte leaf "
                    f"at {leaf[0]:#x}"
                )
        unmapped, _ = self._unmap_table(root_pfn, LEVELS, 0, iova, end)
        return unmapped

    def _leaf_containing(self, root: int, iova: int) -> tuple[int, int] | None:
        table = root
        for level in range(LEVELS, 0, -1):
            entry = self._entry(table, (iova >> level_shift(level)) & (ENTRIES_PER_TABLE - 1))
            if not entry & PTE_PRESENT:
                return None
            if level == 1 or entry & PTE_LEAF:
                span = entry_span(level)
                return iova & ~(span - 1), span
            table = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
        return None

    def _unmap_table(self, table: int, level: int, base: int, lo: int, hi: int) -> tuple[int, bool]:
        """Unmap [lo, hi) within the table covering IOVA from `base`; (bytes, now empty)."""
        shift = level_shift(level)
        span = 1 << shift
        first = (max(lo, base) - base) >> shift
        last = (min(hi, base + ENTRIES_PER_TABLE * span) - base + span - 1) >> shift
        entries = _read_table(self._memory, table)
        present = np.flatnonzero(entries[first:last] & np.uint64(PTE_PRESENT)) + first
        unmapped = 0
        if level == 1:
            if present.size:
                self._memory.view(table).view("<u8")[first:last] = 0
                entries[first:last] = 0
                unmapped = int(present.size) * span
        else:
            for index in present.tolist():
                entry = int(entries[index])
                if entry & PTE_LEAF:
                    unmapped += span  # inside [lo, hi): `unmap` refused straddling leaves
                    empty = True
                else:
                    child = (entry & PTE_ADDR_MASK) >> PAGE_SHIFT
                    done, empty = self._unmap_table(child, level - 1, base + index * span, lo, hi)
                    unmapped += done
                    if empty:
                        self._release_table(child)
                if empty:
                    self._set_entry(table, index, 0)
                    entries[index] = 0
        return unmapped, not entries.any()
