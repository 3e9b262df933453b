"""hugetlb memfds (MFD_HUGETLB): the file, its handler (`hugetlb-memfd-v1`) and the
`hugetlb-v1` FLB.

A hugetlb memfd is hugetlbfs-backed, not shmem: its folios are huge pages from the pool of
its size (`memfd.hugetlb_pool`). Its record has the memfd-v1 layout and is dense, so its
holes are filled at prepare (from the pool) exactly as for `memfd-v1`/`memfd-v2` (see
`memfd.handler`); retrieved huge pages become pages in use of the next kernel's pool. The
FLB carries each pool's size to the next kernel.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from luod.hw.memory import PhysicalMemory
from luod.kernel_model.errors import KernelError
from luod.kernel_model.luo.file import IncomingFile, OutgoingFile
from luod.kernel_model.luo.flb import PageFlb
from luod.kernel_model.memfd import hugetlb_pool
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.handler import MemfdHandler, PreservedMemfd
from luod.kernel_model.memfd.records import V1, MemfdRecord
from luod.kernel_model.mm import FolioSource
from luod.kernel_model.vfs import File

HUGETLB_MEMFD = "hugetlb-memfd-v1"
HUGETLB_FLB = "hugetlb-v1"
FLB_ENTRY = struct.Struct("<QQ")  # (order, pool total)


class HugetlbMemfdFile(MemfdFile):
    """A memfd created with MFD_HUGETLB: hugetlbfs-backed, not shmem.

    The shmem memfd handler refuses it (reference §4.1); the hugetlb handler below
    preserves it where the kernel image has one (7.1). Folios are huge pages
    (order 9 = 2 MiB or 18 = 1 GiB, the MFD_HUGE_* sizes) and the size must stay a whole
    number of them (hugetlbfs_setattr: EINVAL). `write` keeps working although hugetlbfs
    has no write(): it stands in for stores through a mapping, which this model lacks."""

    HUGE_ORDERS = tuple(hugetlb_pool.HUGE_ORDERS.values())

    def __init__(
        self,
        memory: PhysicalMemory,
        mm: FolioSource,
        *,
        name: str = "",
        folio_order: int = 9,
        allow_sealing: bool = True,
    ) -> None:
        if folio_order not in self.HUGE_ORDERS:
            raise KernelError(
                f"hugetlb memfd folio order {folio_order} is not a huge page size "
                f"(orders {self.HUGE_ORDERS})",
                errno=errno.EINVAL,
            )
        super().__init__(
            memory, mm, name=name, folio_order=folio_order, allow_sealing=allow_sealing
        )

    def describe(self) -> str:
        return f'{self.file_type} "{self.name}" (hugetlb, inode {self.inode})'

    def truncate(self, size: int) -> None:
        if size % self.folio_size:
            raise self._error(
                f"truncate to {size} bytes: not a multiple of the {self.folio_size}-byte huge page",
                errno.EINVAL,
            )
        super().truncate(size)


class HugetlbFlb(PageFlb):
    """Each pool's size: {u64 count} then (u64 order, u64 total) per pool, in one page."""

    compatible = HUGETLB_FLB

    def body(self) -> bytes:
        pools = self.kernel.hugetlb.pools
        return struct.pack("<Q", len(pools)) + b"".join(
            FLB_ENTRY.pack(order, pool.total) for order, pool in pools.items()
        )

    def parse(self, raw: bytes) -> Any:
        (count,) = struct.unpack_from("<Q", raw)
        return dict(
            FLB_ENTRY.unpack_from(raw, 8 + i * FLB_ENTRY.size) for i in range(min(count, 255))
        )

    def finish(self, data: int, obj: Any) -> None:
        """The last hugetlb file finished: each pool returns to the previous kernel's size.
        The next kernel booted fresh pools and adopted the preserved pages on top, so a
        pool is usually too big by then and gives its surplus free pages back."""
        for order, total in dict(obj).items():
            pool = self.kernel.hugetlb.pools.get(order)
            if pool is not None:
                pool.resize(total)


class HugetlbMemfdHandler(MemfdHandler):
    file_type = "memfd-hugetlb"
    formats = (HUGETLB_MEMFD,)
    flbs = (HUGETLB_FLB,)

    def can_preserve(self, file: File) -> bool:
        return type(file) is HugetlbMemfdFile

    def pack_header(
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: PreservedMemfd
    ) -> bytes:
        return super().pack_header(f, V1, nr, folios_phys, state)

    def parse_header(self, compatible: str, raw: bytes) -> dict[str, int]:
        return super().parse_header(V1, raw)

    def folio_source(self, record: MemfdRecord) -> FolioSource:
        return self.kernel.hugetlb.pool(record.order)

    def new_file(self, f: IncomingFile, record: MemfdRecord) -> MemfdFile:
        luo = self.kernel.luo
        assert luo is not None
        luo.flb_get_incoming(HUGETLB_FLB)
        pool = self.kernel.hugetlb.pool(record.order)
        pool.adopt([(int(p), 1) for p in record.pfns.tolist()])
        memfd = HugetlbMemfdFile(self.kernel.memory, pool, folio_order=record.order)
        memfd.pos = record.pos
        return memfd
