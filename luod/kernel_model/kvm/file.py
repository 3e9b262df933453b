"""KVM VM and guest_memfd files (reference/kernel.md §4.4).

A `KvmVmFile` stands for a VM fd; a `GuestMemfdFile` is guest-private memory bound to one
VM, with folios in emulated RAM like a memfd (and the memfd model's frozen-mapping rules
while preserved). Live update preserves the VM first; guest_memfd records the VM's token.
"""

from __future__ import annotations

from typing import ClassVar

from luod.hw.memory import PhysicalMemory
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.mm import FolioSource
from luod.kernel_model.vfs import File

GMEM_FLAG_MMAP = 1
GMEM_FLAG_INIT_SHARED = 2


class KvmVmFile(File):
    file_type: ClassVar[str] = "kvm-vm"

    def __init__(self, vm_type: int = 0) -> None:
        super().__init__()
        self.vm_type = vm_type

    def describe(self) -> str:
        return f"kvm-vm (type {self.vm_type}, inode {self.inode})"


class GuestMemfdFile(MemfdFile):
    file_type: ClassVar[str] = "guest_memfd"

    def __init__(
        self,
        memory: PhysicalMemory,
        mm: FolioSource,
        vm: KvmVmFile,
        *,
        flags: int = 0,
        folio_order: int = 0,
    ) -> None:
        super().__init__(
            memory, mm, name="guest_memfd", folio_order=folio_order, allow_sealing=False
        )
        self.vm = vm.get()
        self.flags = flags

    def release(self) -> None:
        super().release()
        self.vm.put()

    def describe(self) -> str:
        return f"guest_memfd of {self.vm.describe()} (inode {self.inode})"
