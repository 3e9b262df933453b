"""The IOMMU: per-device context registers and a page-table walker over emulated RAM.

This module owns the hardware that walks I/O page tables (their format is defined in
`luod.hw.pagetable`). The walker reads table entries from physical memory on every
translation, so if the next kernel did not preserve a table page (it was released, i.e.
punched to a hole that reads as zero), the walk finds a not-present entry and the device
faults. Nothing here is cached across calls: there is no IOTLB that could keep a lost
mapping alive. Reads of RAM always go through pread (`read_at`, `gather`), never through
the mapping, so walking a lost table never makes its hole resident again.

The context table (which device uses which domain root) is a set of hardware registers and
is kept as a dict keyed by BDF: it survives a kexec as any register does. Faults are counted
per device and per reason.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import Counter
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.hw.pagetable import (
    ENTRIES_PER_TABLE,
    ENTRY_SIZE,
    IOVA_LIMIT,
    LEVELS,
    PTE_ADDR_MASK,
    PTE_LEAF,
    PTE_PRESENT,
    PTE_RESERVED,
    PTE_WRITE,
    SIZE_2M,
    Int64Array,
    entry_span,
    level_shift,
)

U8Array = npt.NDArray[np.uint8]

_BDF_RE = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")


def parse_bdf(text: str) -> str:
    """The canonical (lowercase) form of a PCI address "DDDD:BB:DD.F"; ValueError if bad."""
    bdf = text.lower()
    match = _BDF_RE.fullmatch(bdf)
    if match is None or int(match.group(3), 16) > 0x1F:
        raise ValueError(f"{text!r} is not a PCI address of the form 0000:01:00.0")
    return bdf


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
