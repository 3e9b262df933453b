"""The emulated machine's PCI devices as clients see them: lookup by BDF, their state,
and the list a plan picks from.

The `device.*` methods read and drive devices through here; a device's DMA engine is
verified on every look, and a window that no longer translates is reported, not raised.
A BDF that names no device is answered with the BDFs there are.
"""

from __future__ import annotations

import errno
from typing import Any

from luod.daemon.errors import DaemonError
from luod.hw.dma import RingCheck
from luod.hw.iommu import IommuFault
from luod.hw.machine import Machine
from luod.hw.pci import PciDevice
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.vfio_pci.file import VfioDeviceFile


def device(machine: Machine, bdf: str) -> PciDevice:
    """The PCI device at `bdf`, or `luod.NoSuchDevice` (ENOENT)."""
    try:
        return machine.pci[bdf]
    except (KeyError, ValueError):
        raise DaemonError(
            "NoSuchDevice",
            f"{machine.pci.not_found(bdf)} (luod --pci N plugs in N devices)",
            errno=errno.ENOENT,
            obj=bdf,
        ) from None


def device_object(machine: Machine, bdf: str) -> dict[str, Any]:
    """A device as `device.show` reports it: power, interrupts, its IOMMU domain and its
    DMA engine's counters and ring check."""
    dev = device(machine, bdf)
    dma = dev.dma
    check: RingCheck | None = None
    ring_error = None
    if dma.window is not None:
        try:
            check = dma.verify()
        except IommuFault as exc:  # the window no longer translates: say so, do not fail
            ring_error = str(exc)
    return {
        "bdf": dev.bdf,
        "power": dev.power.value,
        "irq": dev.interrupts_enabled,
        "iommu_domain": machine.iommu.root_of(dev.bdf),
        "dma": {
            "running": dma.running,
            "window": None if dma.window is None else [dma.window.iova, dma.window.length],
            "issued": dma.issued,
            "writes": dma.writes,
            "faults": dma.faults,
            "ring_ok": None if check is None else check.ok,
            "ring_consistent": None if check is None else check.consistent,
            "ring_error": ring_error,
        },
    }


def device_list(kernel: Kernel, *, sessions_readable: bool = True) -> dict[str, Any]:
    """Every PCI device, with the session file holding it (None when no session does, or
    when LUO's sessions cannot be read), then the kernel's hugetlb pools."""
    holders: dict[str, dict[str, Any]] = {}
    luo = kernel.luo
    if luo is not None and sessions_readable:
        for direction, table in (("outgoing", luo.outgoing), ("incoming", luo.incoming)):
            for name, session in table.items():
                for f in session.files:
                    if isinstance(f.file, VfioDeviceFile):
                        holders[f.file.bdf] = {
                            "session": name,
                            "direction": direction,
                            "token": f.token,
                        }
    devices = [
        {**device_object(kernel.machine, dev.bdf), "held_by": holders.get(dev.bdf)}
        for dev in kernel.machine.pci
    ]
    return {"devices": devices, "hugetlb": kernel.hugetlb.status()}


def carried_through_kexec(kernel: Kernel) -> bool:
    """Whether a kexec now changes nothing that any running DMA engine does, so the
    devices' time may accrue across it (luod.daemon.clock): every device whose engine runs
    is held by a vfio file preserved in an outgoing session. Its iommufd, and every memfd
    that iommufd maps, are then preserved too (their handlers refuse otherwise), so the
    device stays attached when userspace dies and every frame its DMA walks or writes
    survives the next kernel's release: writing before or after the kexec is the same."""
    running = {d.bdf for d in kernel.machine.pci if d.dma.running}
    if not running:
        return True
    luo = kernel.luo
    if luo is None:
        return False
    held = {
        f.file.bdf
        for session in luo.outgoing.values()
        for f in session.files
        if isinstance(f.file, VfioDeviceFile)
    }
    return running <= held
