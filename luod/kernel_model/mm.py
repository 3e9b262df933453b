"""Frame allocation for one kernel instance, and the KHO scratch regions it must respect.

Frames are metadata: allocating one assigns it, nothing is written. The invariant that
makes "lost memory" checkable is that **a free frame holds no data**: frees punch holes
through `hw`, and a booting kernel releases every old byte it does not keep, so every
allocation reads as zero.

Scratch regions (`ScratchLayout`) are physically contiguous ranges that never hold
preserved frames; the next kernel boots inside them. While a kernel boots from a KHO
handover it allocates only from scratch (`scratch_only`) until the preserved frames are
reserved; afterwards normal allocations never come from scratch, so scratch stays free of
anything a kernel could preserve. The same layout is handed over and reused on every kexec.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import numpy as np

from luod.hw.memory import PAGE_SHIFT, PhysicalMemory
from luod.kernel_model.errors import BadAlignment, KernelError, OutOfMemory
from luod.kernel_model.extents import Extents, Int64Array

MAX_ORDER = 18  # 1 GiB folios
FIRMWARE_FRAMES = 256  # the first MiB: firmware's, never allocated


class FolioSource(Protocol):
    """What a file needs to get and give back folios: the frame allocator, or a hugetlb
    pool that hands out only its own huge pages."""

    def alloc_folio_runs(self, order: int, count: int) -> list[tuple[int, int]]: ...

    def free_extents(self, ext: Extents) -> None: ...


@attrs.frozen
class ScratchRegion:
    name: str
    start: int  # pfn
    npages: int

    @property
    def end(self) -> int:
        return self.start + self.npages


@attrs.frozen
class ScratchConfig:
    """Requested scratch sizes in bytes (`kho_scratch=<lowmem>,<global>`); 0 picks a default."""

    lowmem_bytes: int = 0
    global_bytes: int = 0


@attrs.frozen
class ScratchLayout:
    regions: tuple[ScratchRegion, ...]

    @classmethod
    def place(cls, frames: int, config: ScratchConfig | None = None) -> ScratchLayout:
        """The cold-boot layout: lowmem right after firmware, global at the top of RAM."""
        config = config or ScratchConfig()
        lowmem = (config.lowmem_bytes >> PAGE_SHIFT) or min(4096, frames // 64)
        global_ = (config.global_bytes >> PAGE_SHIFT) or min(131072, frames // 16)
        if FIRMWARE_FRAMES + lowmem + global_ >= frames // 2:
            raise ValueError(
                f"scratch of {lowmem + global_} frames does not fit a RAM of {frames} frames"
            )
        return cls(
            (
                ScratchRegion("lowmem", FIRMWARE_FRAMES, lowmem),
                ScratchRegion("global", frames - global_, global_),
            )
        )

    def extents(self) -> Extents:
        return Extents.from_ranges([r.start for r in self.regions], [r.end for r in self.regions])

    def to_u64_array(self) -> list[int]:
        """(physical address, size) pairs, as KHO hands scratch over."""
        out: list[int] = []
        for r in self.regions:
            out += [r.start << PAGE_SHIFT, r.npages << PAGE_SHIFT]
        return out

    @classmethod
    def from_u64_array(cls, values: list[int], frames: int) -> ScratchLayout:
        """Parse a handed-over layout; raises ValueError on anything implausible."""
        if not values or len(values) % 2:
            raise ValueError(f"scratch table has {len(values)} cells, want (addr, size) pairs")
        names = ("lowmem", "global") if len(values) == 4 else ()
        regions = []
        for i in range(0, len(values), 2):
            addr, size = values[i], values[i + 1]
            if addr % (1 << PAGE_SHIFT) or size % (1 << PAGE_SHIFT) or size == 0:
                raise ValueError(f"scratch region {addr:#x}+{size:#x} is not page aligned")
            start, npages = addr >> PAGE_SHIFT, size >> PAGE_SHIFT
            if start < FIRMWARE_FRAMES or start + npages > frames:
                raise ValueError(f"scratch region {addr:#x}+{size:#x} is outside usable RAM")
            name = names[i // 2] if names else f"region{i // 2}"
            regions.append(ScratchRegion(name, start, npages))
        layout = cls(tuple(regions))
        if layout.extents().total() != sum(r.npages for r in regions):
            raise ValueError("scratch regions overlap")
        return layout


class _FreeList:
    """Free frame ranges as sorted numpy arrays, so a fragmented list of millions of
    ranges costs arrays, not Python objects.

    Hot operations touch one range in place: taking a prefix or suffix moves a bound, a
    range used up stays as an empty range until the next `_settle`, and freed ranges that
    touch no neighbour wait in `_pending` (bounded) until the next allocation merges them.
    """

    PENDING_MAX = 256

    def __init__(self, free: Extents) -> None:
        self._starts = free.starts.copy()
        self._ends = free.ends.copy()
        self._pending: list[tuple[int, int]] = []

    def _settle(self) -> None:
        if self._pending:
            extra_s = np.array([p[0] for p in self._pending], dtype=np.int64)
            extra_e = np.array([p[1] for p in self._pending], dtype=np.int64)
            starts = np.concatenate((self._starts, extra_s))
            ends = np.concatenate((self._ends, extra_e))
            self._pending.clear()
        else:
            starts, ends = self._starts, self._ends
        merged = Extents.from_ranges(starts, ends)  # also drops emptied ranges
        self._starts, self._ends = merged.starts.copy(), merged.ends.copy()

    def extents(self) -> Extents:
        self._settle()
        return Extents(self._starts.copy(), self._ends.copy())

    def total(self) -> int:
        return int((self._ends - self._starts).sum()) + sum(e - s for s, e in self._pending)

    def plan_aligned(self, order: int, count: int) -> list[tuple[int, int]] | None:
        """First-fit runs (first pfn, number of blocks) for `count` aligned blocks."""
        if self._pending:
            self._settle()
        # Most small requests are done within the first few ranges: walk those in Python
        # (the same first fit), as the arrays below cost more than the whole walk.
        size, walk = 1 << order, self.PLAN_WALK
        walked: list[tuple[int, int]] = []
        need = count
        for s, e in zip(self._starts[:walk].tolist(), self._ends[:walk].tolist(), strict=True):
            start = (s + size - 1) & ~(size - 1)
            fit = (e - start) >> order
            if fit > 0:
                walked.append((start, min(fit, need)))
                need -= walked[-1][1]
                if not need:
                    return walked
        # Then a prefix of the ranges, so a list of millions of ranges (after reserving
        # scattered folios) costs little.
        prefix = self.PLAN_PREFIX if count <= self.PLAN_PREFIX else self._starts.size
        for limit in (prefix, self._starts.size):
            runs = self._plan_in(order, count, limit)
            if runs is not None or limit >= self._starts.size:
                return runs
        return None

    PLAN_WALK = 8
    PLAN_PREFIX = 1024

    def _plan_in(self, order: int, count: int, limit: int) -> list[tuple[int, int]] | None:
        """`plan_aligned` within the first `limit` free ranges."""
        size = 1 << order
        first = (self._starts[:limit] + size - 1) & ~(size - 1)
        fit = np.maximum(self._ends[:limit] - first, 0) >> order
        have = np.cumsum(fit)
        if not have.size or int(have[-1]) < count:
            return None
        stop = int(np.searchsorted(have, count))  # the range that completes the request
        runs: list[tuple[int, int]] = []
        need = count
        for i in np.flatnonzero(fit[: stop + 1]).tolist():
            take = min(int(fit[i]), need)
            runs.append((int(first[i]), take))
            need -= take
        return runs

    def first_fit(self, npages: int) -> int | None:
        if self._pending:
            self._settle()
        hits = np.flatnonzero(self._ends - self._starts >= npages)
        return int(self._starts[hits[0]]) if hits.size else None

    def take(self, start: int, end: int) -> None:
        """Remove [start, end), which must lie inside one free range."""
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        s, e = int(self._starts[i]), int(self._ends[i])
        assert s <= start and end <= e, "take outside a free range"
        if start == s:
            self._starts[i] = end  # prefix (or all of it: the range is left empty)
        elif end == e:
            self._ends[i] = start
        else:
            self._ends[i] = start
            self._starts = np.insert(self._starts, i + 1, end)
            self._ends = np.insert(self._ends, i + 1, e)

    def give(self, start: int, end: int) -> None:
        """Return [start, end); refuses a range that is already (partly) free."""
        i = int(np.searchsorted(self._starts, start, side="right"))
        left = i - 1
        if (
            (left >= 0 and self._ends[left] > start and self._starts[left] < self._ends[left])
            or (i < self._starts.size and self._starts[i] < end and self._starts[i] < self._ends[i])
            or any(s < end and start < e for s, e in self._pending)
        ):
            raise KernelError(f"frames [{start:#x}, {end:#x}) freed twice")
        if left >= 0 and self._ends[left] == start and self._starts[left] < start:
            self._ends[left] = end
        elif i < self._starts.size and self._starts[i] == end and self._ends[i] > end:
            self._starts[i] = start
        else:
            self._pending.append((start, end))
            if len(self._pending) > self.PENDING_MAX:
                self._settle()

    def give_extents(self, ext: Extents) -> None:
        mine = self.extents()
        clash = mine & ext
        if clash:
            raise KernelError(f"frames {clash!r} freed twice")
        merged = mine | ext
        self._starts, self._ends = merged.starts.copy(), merged.ends.copy()

    def take_extents(self, ext: Extents) -> None:
        mine = self.extents()
        rest = mine - ext
        # ext lies inside mine iff taking it removes all of its frames: one sum, not a
        # second pass of set algebra over what may be millions of ranges.
        if rest.total() != mine.total() - ext.total():
            raise KernelError(f"frames {ext - mine!r} are not free")
        self._starts, self._ends = rest.starts, rest.ends


class FrameAllocator:
    """First-fit, alignment-aware extent allocator over one machine's RAM."""

    def __init__(
        self, memory: PhysicalMemory, scratch: ScratchLayout, *, scratch_only: bool = False
    ) -> None:
        self.memory = memory
        self.scratch = scratch
        self.scratch_extents = scratch.extents()
        usable = Extents.of(FIRMWARE_FRAMES, memory.frames)
        self._normal = _FreeList(usable - self.scratch_extents)
        self._scratch = _FreeList(self.scratch_extents)
        self.scratch_only = scratch_only

    # -- allocation ---------------------------------------------------------------------

    def _pool(self) -> _FreeList:
        return self._scratch if self.scratch_only else self._normal

    def alloc_folio_runs(self, order: int, count: int) -> list[tuple[int, int]]:
        """`count` naturally aligned folios of `1 << order` frames, zeroed, as runs of
        back-to-back folios: (first pfn, number of folios). All or nothing."""
        if not 0 <= order <= MAX_ORDER:
            raise BadAlignment(f"folio order {order} outside 0..{MAX_ORDER}")
        if count <= 0:
            return []
        pool = self._pool()
        runs = pool.plan_aligned(order, count)
        if runs is None:
            where = "scratch" if self.scratch_only else "RAM"
            raise OutOfMemory(f"no room in {where} for {count} folios of order {order}")
        for first, n in runs:
            pool.take(first, first + (n << order))
        return runs

    def alloc_folios(self, order: int, count: int) -> Int64Array:
        """`count` naturally aligned folios of `1 << order` frames, zeroed."""
        runs = self.alloc_folio_runs(order, count)
        if not runs:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(
            [first + (np.arange(n, dtype=np.int64) << order) for first, n in runs]
        )

    def alloc_folio(self, order: int = 0) -> int:
        return int(self.alloc_folios(order, 1)[0])

    def alloc_extent(self, npages: int) -> int:
        """`npages` physically contiguous frames, zeroed; returns the first pfn."""
        if npages <= 0:
            raise KernelError(f"cannot allocate {npages} frames")
        pool = self._pool()
        start = pool.first_fit(npages)
        if start is None:
            raise OutOfMemory(f"no contiguous run of {npages} frames free")
        pool.take(start, start + npages)
        return start

    # -- release ------------------------------------------------------------------------

    def _pool_of(self, start: int, end: int) -> _FreeList:
        in_scratch = self.scratch_extents.overlaps_ranges([start], [end])[0]
        if in_scratch and not self.scratch_extents.covers(start, end):
            raise KernelError(f"frames [{start:#x}, {end:#x}) straddle a scratch boundary")
        return self._scratch if in_scratch else self._normal

    def free_extent(self, pfn: int, npages: int) -> None:
        """Free frames; their contents are lost (a free frame holds no data)."""
        if pfn < FIRMWARE_FRAMES or pfn + npages > self.memory.frames or npages <= 0:
            raise KernelError(f"cannot free frames [{pfn:#x}, {pfn + npages:#x})")
        self._pool_of(pfn, pfn + npages).give(pfn, pfn + npages)
        self.memory.zero(pfn, npages)

    def free_folios(self, pfns: Int64Array, order: int) -> None:
        ext = Extents.from_blocks(np.asarray(pfns, dtype=np.int64) >> order, order)
        if ext.total() != len(pfns) << order:
            raise KernelError("folios freed twice in one call")
        self.free_extents(ext)

    def free_extents(self, ext: Extents) -> None:
        if not ext:
            return
        normal = ext - self.scratch_extents
        self._normal.give_extents(normal)
        self._scratch.give_extents(ext & self.scratch_extents)
        self.memory.zero_extents(ext.starts, ext.ends)

    # -- boot -----------------------------------------------------------------------------

    def reserve(self, ext: Extents) -> None:
        """Take frames the previous kernel preserved out of the free lists."""
        clash = ext & self.scratch_extents
        if clash:
            raise KernelError(f"preserved frames {clash!r} lie in scratch")
        self._normal.take_extents(ext)

    def leave_scratch_only(self) -> None:
        self.scratch_only = False

    # -- accounting -----------------------------------------------------------------------

    def free_frames(self) -> int:
        return self._normal.total() + self._scratch.total()

    def free_extents_now(self) -> Extents:
        return self._normal.extents() | self._scratch.extents()
