"""Handlers for memory files beyond plain memfds: hugetlb memfds, KVM VMs, guest_memfd.

- `memfd-hugetlb` (`hugetlb-memfd-v1`): a memfd backed by a hugetlb pool, tied to the
  `hugetlb-v1` FLB, which carries each pool's size to the next kernel. Its record has the
  memfd-v1 layout; retrieved huge pages become pages in use of the next kernel's pool.
- `kvm-vm` (`kvm_vm_luo_v1`): one preserved page {u64 vm type, u64 reserved}.
- `guest_memfd` (`guest_memfd_luo_v1`): depends on its VM, preserved before it in the same
  session. Header {u64 size, u64 flags, u64 nr_folios, u64 vm token, u64 folios phys,
  u32 folio pages, u16 reserved, u16 folio order}, folio entries as memfd's.

Both memfd-like records are dense, so their holes are filled at prepare (from the pool for
a hugetlb memfd) exactly as for `memfd-v1`/`memfd-v2`: see `handlers.memfd`.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from luod.hw.memory import PAGE_SHIFT
from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.base import File
from luod.kernel_model.files.kvm import GuestMemfdFile, KvmVmFile
from luod.kernel_model.files.memfd import HugetlbMemfdFile, MemfdFile
from luod.kernel_model.handlers.memfd import MemfdHandler, _Preserved, _Record
from luod.kernel_model.luo.file import FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.luo.flb import PageFlb
from luod.kernel_model.mm import FolioSource

HUGETLB_MEMFD = "hugetlb-memfd-v1"
HUGETLB_FLB = "hugetlb-v1"
KVM_VM = "kvm_vm_luo_v1"
GUEST_MEMFD = "guest_memfd_luo_v1"
VM_RECORD = struct.Struct("<QQ")
GMEM_HEADER = struct.Struct("<QQQQQIHH")
FLB_ENTRY = struct.Struct("<QQ")  # (order, pool total)


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
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: _Preserved
    ) -> bytes:
        return super().pack_header(f, "memfd-v1", nr, folios_phys, state)

    def parse_header(self, compatible: str, raw: bytes) -> dict[str, int]:
        return super().parse_header("memfd-v1", raw)

    def folio_source(self, record: _Record) -> FolioSource:
        return self.kernel.hugetlb.pool(record.order)

    def new_file(self, f: IncomingFile, record: _Record) -> MemfdFile:
        luo = self.kernel.luo
        assert luo is not None
        luo.flb_get_incoming(HUGETLB_FLB)
        pool = self.kernel.hugetlb.pool(record.order)
        pool.adopt([(int(p), 1) for p in record.pfns.tolist()])
        memfd = HugetlbMemfdFile(self.kernel.memory, pool, folio_order=record.order)
        memfd.pos = record.pos
        return memfd


class KvmVmHandler(FileHandler):
    file_type = "kvm-vm"
    formats = (KVM_VM,)

    def can_preserve(self, file: File) -> bool:
        return isinstance(file, KvmVmFile)

    def preserve(self, f: OutgoingFile) -> None:
        f.private = None

    def unpreserve(self, f: OutgoingFile) -> None:
        pass

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        assert isinstance(f.file, KvmVmFile)
        pfn = self.kernel.kho_out.alloc_preserved(1)
        self.kernel.memory.write(pfn, VM_RECORD.pack(f.file.vm_type, 0))
        f.private = pfn
        return pfn << PAGE_SHIFT

    def cancel(self, f: OutgoingFile) -> None:
        if f.private is not None:
            self.kernel.kho_out.free_preserved(f.private, 1)
            f.private = None

    def retrieve(self, f: IncomingFile) -> File:
        kho_in = self.kernel.kho_in
        assert kho_in is not None
        kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
        vm_type, _ = VM_RECORD.unpack(self.kernel.memory.read_at(f.data, VM_RECORD.size))
        self.kernel.mm.free_extent(f.data >> PAGE_SHIFT, 1)
        return KvmVmFile(vm_type)

    def finish(self, f: IncomingFile) -> None:
        if f.status <= 0:
            kho_in = self.kernel.kho_in
            assert kho_in is not None
            try:
                kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
            except KernelError:
                return
            self.kernel.mm.free_extent(f.data >> PAGE_SHIFT, 1)


class GuestMemfdHandler(MemfdHandler):
    file_type = "guest_memfd"
    formats = (GUEST_MEMFD,)

    def can_preserve(self, file: File) -> bool:
        return isinstance(file, GuestMemfdFile)

    def dependencies(self, f: OutgoingFile) -> list[File]:
        assert isinstance(f.file, GuestMemfdFile)
        return [f.file.vm]

    def preserve(self, f: OutgoingFile) -> None:
        assert isinstance(f.file, GuestMemfdFile)
        luo = self.kernel.luo
        assert luo is not None
        luo.outgoing_token(f.session, f.file.vm)  # ENOENT unless the VM came first
        super().preserve(f)

    def refresh_pos(self, f: OutgoingFile, state: _Preserved) -> None:
        """guest_memfd has no file position (its header starts with the size)."""

    def pack_header(
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: _Preserved
    ) -> bytes:
        gmem = f.file
        assert isinstance(gmem, GuestMemfdFile)
        luo = self.kernel.luo
        assert luo is not None
        vm_token = luo.outgoing_token(f.session, gmem.vm)
        return GMEM_HEADER.pack(
            gmem.size, gmem.flags, nr, vm_token, folios_phys, state.folio_pages, 0, state.order
        )

    def parse_header(self, compatible: str, raw: bytes) -> dict[str, int]:
        size, flags, n, vm_token, fphys, fpages, _, order = GMEM_HEADER.unpack_from(raw)
        return {
            "pos": 0,
            "size": size,
            "seals": 0,
            "flags": flags,
            "nr": n,
            "folios_phys": fphys,
            "folio_pages": fpages,
            "order": order,
            "vm_token": vm_token,
        }

    def new_file(self, f: IncomingFile, record: _Record) -> MemfdFile:
        luo = self.kernel.luo
        assert luo is not None
        vm = luo.incoming_file(f.session, record.extra["vm_token"])
        if not isinstance(vm, KvmVmFile):
            raise KernelError(
                f"guest_memfd token {f.token:#x} names token {record.extra['vm_token']:#x}, "
                "which is not a VM",
                errno=errno.EINVAL,
                obj=f"{f.session.name}/{f.token:#x}",
            )
        return GuestMemfdFile(
            self.kernel.memory, self.kernel.mm, vm, flags=record.flags, folio_order=record.order
        )
