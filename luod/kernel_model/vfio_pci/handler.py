"""The vfio-pci handler (`vfio-pci-v1`) and the pci FLB (`pci-v1`).

A device's iommufd must be preserved first in the same session. freeze refuses a device
with interrupts enabled or not in D0 (EINVAL: the whole freeze fails and the update is
cancelled). Record: {u64 iommufd token, char bdf[16]}.
"""

from __future__ import annotations

import errno
import struct

from luod.hw.memory import PAGE_SHIFT
from luod.hw.pci import PowerState
from luod.kernel_model.errors import KernelError
from luod.kernel_model.iommufd.file import IommufdFile
from luod.kernel_model.luo.file import RETRIEVE_OK, FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.luo.flb import PageFlb
from luod.kernel_model.vfio_pci.file import VfioDeviceFile
from luod.kernel_model.vfs import File

VFIO_PCI = "vfio-pci-v1"
PCI_FLB = "pci-v1"
VFIO = struct.Struct("<Q16s")


class PciFlb(PageFlb):
    compatible = PCI_FLB


class VfioPciHandler(FileHandler):
    file_type = "vfio-pci"
    formats = (VFIO_PCI,)
    flbs = (PCI_FLB,)

    def can_preserve(self, file: File) -> bool:
        return isinstance(file, VfioDeviceFile)

    def dependencies(self, f: OutgoingFile) -> list[File]:
        assert isinstance(f.file, VfioDeviceFile)
        return [f.file.iommufd] if f.file.iommufd is not None else []

    def preserve(self, f: OutgoingFile) -> None:
        device = f.file
        assert isinstance(device, VfioDeviceFile)
        if device.iommufd is None:
            raise KernelError(f"{device.describe()} is not bound to an iommufd", obj=device.bdf)
        luo = self.kernel.luo
        assert luo is not None
        luo.outgoing_token(f.session, device.iommufd)  # ENOENT: the iommufd must come first

    def unpreserve(self, f: OutgoingFile) -> None:
        pass

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        device = f.file
        assert isinstance(device, VfioDeviceFile) and device.iommufd is not None
        luo = self.kernel.luo
        assert luo is not None
        token = luo.outgoing_token(f.session, device.iommufd)
        pfn = self.kernel.kho_out.alloc_preserved(1)
        self.kernel.memory.write(pfn, VFIO.pack(token, device.bdf.encode()))
        f.private = pfn
        return pfn << PAGE_SHIFT

    def cancel(self, f: OutgoingFile) -> None:
        if f.private is not None:
            self.kernel.kho_out.free_preserved(f.private, 1)
            f.private = None

    def freeze(self, f: OutgoingFile) -> None:
        device = f.file
        assert isinstance(device, VfioDeviceFile)
        if device.device.interrupts_enabled or device.device.power is not PowerState.D0:
            raise KernelError(
                f"{device.describe()} cannot be frozen: interrupts must be off and the device "
                f"in D0 (interrupts {'on' if device.device.interrupts_enabled else 'off'}, "
                f"{device.device.power.value})",
                errno=errno.EINVAL,
                obj=device.bdf,
            )

    def retrieve(self, f: IncomingFile) -> File:
        kho_in = self.kernel.kho_in
        luo = self.kernel.luo
        assert kho_in is not None and luo is not None
        kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
        token, raw_bdf = VFIO.unpack(self.kernel.memory.read_at(f.data, VFIO.size))
        self.kernel.mm.free_extent(f.data >> PAGE_SHIFT, 1)
        iommufd = luo.incoming_file(f.session, token)
        assert isinstance(iommufd, IommufdFile)
        device = VfioDeviceFile(self.kernel.machine, raw_bdf.rstrip(b"\0").decode(), restored=True)
        device.adopt(iommufd)
        return device

    def finish(self, f: IncomingFile) -> None:
        if f.status != RETRIEVE_OK:
            kho_in = self.kernel.kho_in
            assert kho_in is not None
            try:
                kho_in.restore_pages(f.data >> PAGE_SHIFT, 1)
            except KernelError:
                return
            self.kernel.mm.free_extent(f.data >> PAGE_SHIFT, 1)
