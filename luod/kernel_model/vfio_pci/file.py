"""The vfio-pci device file (reference/kernel.md §4.3).

A `VfioDeviceFile` stands for a vfio cdev bound to a PCI device; binding it to an iommufd
points the device's IOMMU context at that domain, so its DMA translates through the
tables. A device retrieved after a kexec stays bound to the preserved domain; binding it
to another iommufd is EPERM.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar

from luod.hw.pci import PciDevice, PowerState
from luod.kernel_model.errors import KernelError
from luod.kernel_model.iommufd.file import IommufdFile
from luod.kernel_model.vfs import File

if TYPE_CHECKING:
    from luod.hw.machine import Machine


class VfioDeviceFile(File):
    file_type: ClassVar[str] = "vfio-pci"

    def __init__(self, machine: Machine, bdf: str, *, restored: bool = False) -> None:
        super().__init__()
        try:
            self.device: PciDevice = machine.pci[bdf]
        except KeyError:
            raise KernelError(machine.pci.not_found(bdf), errno=errno.ENOENT, obj=bdf) from None
        self.machine = machine
        self.bdf = self.device.bdf
        self.iommufd: IommufdFile | None = None
        self.restored = restored

    def describe(self) -> str:
        return f"vfio-pci {self.bdf} (inode {self.inode})"

    def bind(self, iommufd: IommufdFile) -> None:
        if self.restored:
            raise KernelError(
                f"{self.describe()} is preserved across the update: it stays bound to its "
                "preserved domain and cannot move to a new iommufd",
                errno=errno.EPERM,
                obj=self.bdf,
            )
        if self.iommufd is not None:
            raise KernelError(
                f"{self.describe()} is bound already", errno=errno.EBUSY, obj=self.bdf
            )
        self.machine.iommu.attach(self.bdf, iommufd.root)
        self.iommufd = iommufd.get()  # type: ignore[assignment]
        iommufd.devices.append(self)

    def adopt(self, iommufd: IommufdFile) -> None:
        """After a kexec: the device is still attached to the preserved domain."""
        self.iommufd = iommufd.get()  # type: ignore[assignment]
        iommufd.devices.append(self)

    def unbind(self) -> None:
        if self.iommufd is None:
            return
        self.device.dma.stop()
        self.machine.iommu.detach(self.bdf)
        self.iommufd.devices.remove(self)
        iommufd, self.iommufd = self.iommufd, None
        iommufd.put()

    def set_irq(self, enabled: bool) -> None:
        self.device.interrupts_enabled = enabled

    def set_power(self, state: str) -> None:
        self.device.power = PowerState(state)

    def release(self) -> None:
        self.unbind()
