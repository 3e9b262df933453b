"""hugetlb pools: huge pages set aside at boot, handed out to hugetlb memfds.

A pool per huge page size (2 MiB = order 9, 1 GiB = order 18), sized by the kernel command
line (`luod --hugetlb 2M=COUNT,1G=COUNT`). As `hugepages=` does, a boot takes what fits:
on a machine too small for the request the pool is smaller, and `status` says so.

Across a live update the hugetlb FLB carries each pool's size; a hugetlb memfd's preserved
huge pages come back as pages in use of the next kernel's pool (`adopt`), and the pool is
topped up (or trimmed) so that its total matches the previous kernel's again.
"""

from __future__ import annotations

import errno

import attrs

from luod.kernel_model.errors import KernelError, OutOfMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.mm import FrameAllocator, _FreeList

HUGE_ORDERS = {2 << 20: 9, 1 << 30: 18}


@attrs.define(eq=False)
class HugetlbPool:
    order: int
    mm: FrameAllocator
    requested: int
    total: int = 0
    _free: _FreeList = attrs.field(factory=lambda: _FreeList(Extents.empty()))

    @property
    def page_size(self) -> int:
        return 4096 << self.order

    def grow(self, count: int) -> int:
        """Take up to `count` more huge pages from the allocator; returns how many."""
        got = 0
        while got < count:
            try:
                runs = self.mm.alloc_folio_runs(self.order, count - got)
            except OutOfMemory:
                if count - got == 1:
                    break
                count = got + (count - got) // 2  # take what fits, as hugepages= does
                continue
            for pfn, n in runs:
                self._free.give(pfn, pfn + (n << self.order))
                got += n
        self.total += got
        return got

    def shrink(self, count: int) -> int:
        """Give up to `count` free huge pages back to the allocator; returns how many."""
        given = 0
        while given < count:
            runs = self._free.plan_aligned(self.order, 1)
            if runs is None:
                break
            first, _ = runs[0]
            end = first + (1 << self.order)
            self._free.take(first, end)
            self.mm.free_extent(first, 1 << self.order)
            given += 1
        self.total -= given
        return given

    def resize(self, total: int) -> None:
        """Grow or shrink towards `total` pages (shrinking only gives back free pages)."""
        if self.total < total:
            self.grow(total - self.total)
        elif self.total > total:
            self.shrink(self.total - total)

    @property
    def free(self) -> int:
        return self._free.total() >> self.order

    # -- the FolioSource interface a hugetlb memfd allocates through ------------------------

    def alloc_folio_runs(self, order: int, count: int) -> list[tuple[int, int]]:
        if order != self.order:
            raise KernelError(
                f"hugetlb pool of {self.page_size >> 20} MiB pages cannot give order {order}",
                errno=errno.EINVAL,
            )
        if count <= 0:
            return []
        runs = self._free.plan_aligned(order, count)
        if runs is None:
            raise OutOfMemory(
                f"hugetlb pool of {self.page_size >> 20} MiB pages has {self.free} free, "
                f"{count} wanted",
                obj=f"hugetlb-{self.page_size >> 20}M",
            )
        for first, n in runs:
            self._free.take(first, first + (n << order))
        return runs

    def free_extents(self, ext: Extents) -> None:
        """Pages a file gave back return to the pool, not to the allocator. Their bytes
        are lost (a free huge page holds no data)."""
        for start, end in ext:
            self._free.give(start, end)
            self.mm.memory.zero(start, end - start)

    def adopt(self, runs: list[tuple[int, int]]) -> None:
        """Preserved huge pages restored in the next kernel become pages in use."""
        self.total += sum(n for _, n in runs)


class HugetlbPools:
    def __init__(self, mm: FrameAllocator, sizes: tuple[tuple[int, int], ...]) -> None:
        self.pools: dict[int, HugetlbPool] = {}
        for page_size, count in sizes:
            order = HUGE_ORDERS.get(page_size)
            if order is None:
                raise KernelError(f"no hugetlb page size {page_size}", errno=errno.EINVAL)
            pool = HugetlbPool(order, mm, count)
            pool.grow(count)
            self.pools[order] = pool

    def pool(self, order: int) -> HugetlbPool:
        pool = self.pools.get(order)
        if pool is None:
            raise KernelError(
                f"no hugetlb pool of order {order} on this kernel", errno=errno.ENOMEM
            )
        return pool

    def status(self) -> list[dict[str, int]]:
        return [
            {
                "page_size": p.page_size,
                "requested": p.requested,
                "total": p.total,
                "free": p.free,
            }
            for p in self.pools.values()
        ]
