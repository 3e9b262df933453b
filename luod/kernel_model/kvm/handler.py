"""The KVM handlers: `kvm-vm` (`kvm_vm_luo_v1`) and `guest_memfd` (`guest_memfd_luo_v1`).

- `kvm-vm`: one preserved page {u64 vm type, u64 reserved}.
- `guest_memfd`: depends on its VM, preserved before it in the same session. Header
  {u64 size, u64 flags, u64 nr_folios, u64 vm token, u64 folios phys, u32 folio pages,
  u16 reserved, u16 folio order}, folio entries as memfd's. The record is dense, so its
  holes are filled at prepare exactly as for `memfd-v1`/`memfd-v2`: see `memfd.handler`,
  whose lifecycle this handler reuses.
"""

from __future__ import annotations

import errno
import struct

from luod.hw.memory import PAGE_SHIFT
from luod.kernel_model.errors import KernelError
from luod.kernel_model.kvm.file import GuestMemfdFile, KvmVmFile
from luod.kernel_model.luo.file import FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.handler import MemfdHandler, PreservedMemfd
from luod.kernel_model.memfd.records import MemfdRecord
from luod.kernel_model.vfs import File

KVM_VM = "kvm_vm_luo_v1"
GUEST_MEMFD = "guest_memfd_luo_v1"
VM_RECORD = struct.Struct("<QQ")
GMEM_HEADER = struct.Struct("<QQQQQIHH")


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

    def refresh_pos(self, f: OutgoingFile, state: PreservedMemfd) -> None:
        """guest_memfd has no file position (its header starts with the size)."""

    def pack_header(
        self, f: OutgoingFile, compatible: str, nr: int, folios_phys: int, state: PreservedMemfd
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

    def new_file(self, f: IncomingFile, record: MemfdRecord) -> MemfdFile:
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
