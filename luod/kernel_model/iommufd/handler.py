"""The iommufd handler (`iommufd-v1`) and the iommu-core FLB (`iommu-core-v1`).

Every memfd mapped into the IOAS must be preserved first in the same session. At
preserve the domain's page-table pages are preserved through KHO, so DMA keeps translating
across the kexec. Record (little-endian, preserved pages):
    u64 nr_hwpts (1); {u64 root phys, u64 hwpt token, u8 reclaimed, u8 pad[7]};
    u64 nr_maps; nr_maps x {u64 iova, u64 length, u64 memfd token, u64 offset}
After the kexec the retrieved iommufd is restored but not reclaimed: finish is vetoed
(EBUSY) until userspace re-creates the mappings and the kernel verifies them.

`LUOD_TEST_SKIP_IOMMU_TABLES=1` in the environment makes iommufd skip preserving its page
tables: the negative control that shows a device faulting after the kexec. Tests only.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

import numpy as np

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE
from luod.hw.pagetable import table_pages
from luod.kernel_model.errors import KernelError
from luod.kernel_model.iommufd.file import IommufdFile, Mapping
from luod.kernel_model.luo.file import RETRIEVE_OK, FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.luo.flb import PageFlb
from luod.kernel_model.vfs import File

IOMMUFD = "iommufd-v1"
IOMMU_CORE_FLB = "iommu-core-v1"
HWPT = struct.Struct("<QQB7x")
MAP = struct.Struct("<QQQQ")
SKIP_TABLES_ENV = "LUOD_TEST_SKIP_IOMMU_TABLES"


def _pages(nbytes: int) -> int:
    return max(1, -(-nbytes // PAGE_SIZE))


class IommuCoreFlb(PageFlb):
    compatible = IOMMU_CORE_FLB


class IommufdHandler(FileHandler):
    file_type = "iommufd"
    formats = (IOMMUFD,)
    flbs = (IOMMU_CORE_FLB,)

    def can_preserve(self, file: File) -> bool:
        return isinstance(file, IommufdFile)

    def dependencies(self, f: OutgoingFile) -> list[File]:
        assert isinstance(f.file, IommufdFile)
        return [m.memfd for m in f.file.mappings]

    def preserve(self, f: OutgoingFile) -> None:
        iommufd = f.file
        assert isinstance(iommufd, IommufdFile)
        luo = self.kernel.luo
        assert luo is not None
        for m in iommufd.mappings:
            luo.outgoing_token(f.session, m.memfd)  # ENOENT: the memfd must come first
        if any(
            g.file is not iommufd and isinstance(g.file, IommufdFile) and g.token == f.token
            for g in f.session.files
        ):
            raise KernelError("HWPT token in use", errno=errno.EADDRINUSE)
        pages = table_pages(self.kernel.memory, iommufd.root)
        if os.environ.get(SKIP_TABLES_ENV) == "1":
            pages = np.zeros(0, dtype=np.int64)
        self.kernel.kho_out.preserve_folios(pages, 0)
        f.private = {"tables": pages, "record": None}

    def unpreserve(self, f: OutgoingFile) -> None:
        self.kernel.kho_out.unpreserve_folios(f.private["tables"], 0)

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        iommufd = f.file
        assert isinstance(iommufd, IommufdFile)
        luo = self.kernel.luo
        assert luo is not None
        body = struct.pack("<Q", 1) + HWPT.pack(iommufd.root << PAGE_SHIFT, f.token, 0)
        body += struct.pack("<Q", len(iommufd.mappings))
        for m in iommufd.mappings:
            body += MAP.pack(m.iova, m.length, luo.outgoing_token(f.session, m.memfd), m.offset)
        npages = _pages(len(body))
        pfn = self.kernel.kho_out.alloc_preserved(npages)
        self.kernel.memory.write(pfn, body)
        f.private["record"] = (pfn, npages)
        return pfn << PAGE_SHIFT

    def cancel(self, f: OutgoingFile) -> None:
        if f.private["record"] is not None:
            self.kernel.kho_out.free_preserved(*f.private["record"])
            f.private["record"] = None

    def _read(self, f: IncomingFile) -> dict[str, Any]:
        kho_in, memory = self.kernel.kho_in, self.kernel.memory
        assert kho_in is not None
        head = memory.read_at(f.data, 48)
        (nr_hwpts,) = struct.unpack_from("<Q", head)
        root_phys, _token, _reclaimed = HWPT.unpack_from(head, 8)
        (nr_maps,) = struct.unpack_from("<Q", head, 8 + HWPT.size)
        if nr_hwpts != 1 or nr_maps > (1 << 20):
            raise KernelError(f"iommufd record of token {f.token:#x} is corrupt", errno=errno.EIO)
        size = 16 + HWPT.size + nr_maps * MAP.size
        npages = _pages(size)
        kho_in.restore_pages(f.data >> PAGE_SHIFT, npages)
        raw = memory.read_at(f.data, size)
        self.kernel.mm.free_extent(f.data >> PAGE_SHIFT, npages)
        maps = [MAP.unpack_from(raw, 16 + HWPT.size + i * MAP.size) for i in range(nr_maps)]
        return {"root": root_phys >> PAGE_SHIFT, "maps": maps}

    def retrieve(self, f: IncomingFile) -> File:
        record = self._read(f)
        kho_in = self.kernel.kho_in
        assert kho_in is not None
        root = record["root"]
        try:
            kho_in.restore_folios(table_pages(self.kernel.memory, root), 0)
        except KernelError as exc:
            raise KernelError(
                f"iommufd token {f.token:#x}: its page tables were not preserved ({exc.message})",
                errno=errno.EIO,
                obj=f"{f.session.name}/{f.token:#x}",
            ) from exc
        iommufd = IommufdFile(self.kernel.machine, self.kernel.mm, root=root)
        f.private = record["maps"]  # (iova, length, memfd token, offset): for reclaim
        return iommufd

    def can_finish(self, f: IncomingFile) -> bool:
        if f.status != RETRIEVE_OK:
            return True
        assert isinstance(f.file, IommufdFile)
        return f.file.reclaimed

    def finish(self, f: IncomingFile) -> None:
        if f.status == RETRIEVE_OK:
            return
        # never retrieved: nobody will reclaim the domain; its tables go with the data
        try:
            record = self._read(f)
            self.kernel.kho_in.restore_folios(table_pages(self.kernel.memory, record["root"]), 0)  # type: ignore[union-attr]
        except KernelError:
            return

    def reclaim(self, f: IncomingFile) -> None:
        """`luoctl file reclaim`: re-create the IOAS from the retrieved memfds, as the
        record lists them, and let the kernel verify and adopt the preserved domain."""
        iommufd = f.file
        assert isinstance(iommufd, IommufdFile)
        luo = self.kernel.luo
        assert luo is not None
        proposed = []
        for iova, length, token, offset in f.private or []:
            memfd = luo.incoming_file(f.session, token)
            proposed.append(Mapping(iova, length, memfd, offset))  # type: ignore[arg-type]
        iommufd.reclaim(proposed)
