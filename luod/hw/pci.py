"""PCI devices on the machine's bus, each with a DMA engine that writes through the IOMMU.

This module owns the devices a live update must keep alive: they are hardware, so they
survive a kexec with their state (power state, interrupt enable, a running DMA engine),
and they keep writing to memory while the kernel freezes, kexecs and boots. The machine
steps them with `Machine.advance(ns)`; the kernel and daemon call it between the steps of
an update, so device writes really land during the blackout, and they land only if the
I/O page tables they translate through survived.

The DMA engine and its record format live in `luod.hw.dma`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from luod.hw.dma import DmaEngine
from luod.hw.iommu import Iommu, parse_bdf
from luod.hw.memory import PhysicalMemory

DEFAULT_VENDOR_ID = 0x1B36  # Red Hat, Inc. (QEMU's emulated devices)
DEFAULT_DEVICE_ID = 0x0010


# -- devices and the bus --------------------------------------------------------------------


class PowerState(enum.Enum):
    D0 = "D0"
    D3HOT = "D3hot"


class PciDevice:
    """A PCI function: power state, interrupt enable, its own clock and a DMA engine.

    The engine runs only in D0: in D3hot the device's clock goes on but its run time (and
    so its record schedule) pauses, and resumes where it stopped on return to D0."""

    def __init__(
        self,
        bdf: str,
        memory: PhysicalMemory,
        iommu: Iommu,
        vendor_id: int = DEFAULT_VENDOR_ID,
        device_id: int = DEFAULT_DEVICE_ID,
    ) -> None:
        self.bdf = parse_bdf(bdf)
        if not (0 <= vendor_id <= 0xFFFF and 0 <= device_id <= 0xFFFF):
            raise ValueError(f"PCI ids {vendor_id:#x}:{device_id:#x} are not u16")
        self.vendor_id = vendor_id
        self.device_id = device_id
        self.power = PowerState.D0
        self.interrupts_enabled = False
        self.clock_ns = 0  # device time since the machine was created
        self.dma = DmaEngine(self.bdf, memory, iommu)

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        self.clock_ns += ns
        if self.power is PowerState.D0:
            self.dma.advance(ns)

    def reset(self) -> None:
        """Function-level reset: D0, interrupts off, DMA idle. The clock keeps running."""
        self.power = PowerState.D0
        self.interrupts_enabled = False
        self.dma.reset()

    def to_registers(self) -> dict[str, object]:
        return {
            "bdf": self.bdf,
            "ids": [self.vendor_id, self.device_id],
            "power": self.power.value,
            "interrupts_enabled": self.interrupts_enabled,
            "clock_ns": self.clock_ns,
            "dma": self.dma.to_registers(),
        }


class PciBus:
    """The devices plugged into the machine, keyed by BDF; stepped in BDF order."""

    def __init__(self, memory: PhysicalMemory, iommu: Iommu) -> None:
        self._memory = memory
        self._iommu = iommu
        self._devices: dict[str, PciDevice] = {}

    def add(
        self, bdf: str, *, vendor_id: int = DEFAULT_VENDOR_ID, device_id: int = DEFAULT_DEVICE_ID
    ) -> PciDevice:
        """Plug a device in (hardware configuration, before or between boots)."""
        bdf = parse_bdf(bdf)
        if bdf in self._devices:
            raise ValueError(f"a device is already at {bdf}")
        device = PciDevice(bdf, self._memory, self._iommu, vendor_id, device_id)
        self._devices = dict(sorted({**self._devices, bdf: device}.items()))
        return device

    def __getitem__(self, bdf: str) -> PciDevice:
        try:
            return self._devices[parse_bdf(bdf)]
        except KeyError:
            raise KeyError(self.not_found(bdf)) from None

    def not_found(self, bdf: str) -> str:
        """The message for a BDF that names no device: it lists the ones there are, so a
        plan needs no guessing."""
        if not self._devices:
            return f"no PCI device at {bdf}: the machine has none"
        return f"no PCI device at {bdf}; the machine has {', '.join(self._devices)}"

    def __contains__(self, bdf: object) -> bool:
        if not isinstance(bdf, str):
            return False
        try:
            return parse_bdf(bdf) in self._devices
        except ValueError:
            return False

    def __iter__(self) -> Iterator[PciDevice]:
        return iter(list(self._devices.values()))

    def __len__(self) -> int:
        return len(self._devices)

    def advance(self, ns: int) -> None:
        """Step every device by `ns`, one after another in BDF order. Ordering between two
        devices inside one step is not modelled: step finely if it matters."""
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        for device in self._devices.values():
            device.advance(ns)

    def reset(self) -> None:
        """Bus reset (power cycle): every device reset; the devices stay plugged in."""
        for device in self._devices.values():
            device.reset()

    def to_registers(self) -> list[dict[str, object]]:
        return [device.to_registers() for device in self._devices.values()]

    def load_registers(self, registers: list[dict[str, object]]) -> None:
        self._devices.clear()
        for entry in registers:
            ids = entry["ids"]
            assert isinstance(ids, list) and len(ids) == 2
            device = self.add(str(entry["bdf"]), vendor_id=int(ids[0]), device_id=int(ids[1]))
            device.power = PowerState(entry["power"])
            device.interrupts_enabled = bool(entry["interrupts_enabled"])
            clock = entry["clock_ns"]
            assert isinstance(clock, int)
            device.clock_ns = clock
            dma = entry["dma"]
            assert isinstance(dma, dict)
            device.dma.load_registers(dma)
