"""The machine: RAM, the handover register, the IOMMU and the PCI bus.

Everything here is hardware and survives a kexec untouched: RAM keeps whatever bytes the
next kernel does not release, the IOMMU keeps its context registers (so a device keeps
translating through the same domain root, which works only if the root's table pages
survived in RAM), and PCI devices keep running, DMA included. Only `power_cycle` (a cold
reset) loses state: RAM, the register, IOMMU contexts and device state; the devices stay
plugged in.

`advance(ns)` is the machine's notion of time passing: every device runs for `ns` of its
own clock. The kernel model and the daemon call it between the steps of an update so that
device writes land during the blackout.

`dump` and `load` write and read a machine as files (a sparse RAM image, and every register
in a small JSON file: the handover register, the clock, IOMMU contexts and fault counters,
and each PCI device with its DMA engine's window and counters), so a test can boot the next
kernel in a fresh process and prove that no Python object of the old kernel was needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from luod.hw.handover import HandoverRegister
from luod.hw.iommu import Iommu
from luod.hw.memory import PhysicalMemory
from luod.hw.pci import PciBus

RAM_FILE = "ram.img"
REGISTERS_FILE = "registers.json"


class Machine:
    def __init__(self, memory: PhysicalMemory) -> None:
        self.memory = memory
        self.handover = HandoverRegister()
        self.iommu = Iommu(memory)
        self.pci = PciBus(memory, self.iommu)
        self.now_ns = 0  # machine time: the sum of every `advance`

    @classmethod
    def create(cls, ram_bytes: int, pci_devices: Iterable[str] = ()) -> Machine:
        machine = cls(PhysicalMemory(ram_bytes))
        for bdf in pci_devices:
            machine.pci.add(bdf)
        return machine

    def advance(self, ns: int) -> None:
        """Let `ns` nanoseconds pass: every device runs (and DMAs) for that long."""
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        self.now_ns += ns
        self.pci.advance(ns)

    def power_cycle(self) -> None:
        """A cold reset: every byte of RAM, the register, the IOMMU contexts and device
        state are lost; the devices themselves stay plugged in."""
        self.memory.zero(0, self.memory.frames)
        self.handover.clear()
        self.iommu.reset()
        self.pci.reset()

    def close(self) -> None:
        self.memory.close()

    def registers(self) -> dict[str, Any]:
        """Every register, as plain data: the handover register, the clock, IOMMU contexts
        and the PCI devices."""
        return {
            "handover": self.handover.peek(),
            "now_ns": self.now_ns,
            "iommu": self.iommu.to_registers(),
            "pci": self.pci.to_registers(),
        }

    def dump(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.memory.dump(directory / RAM_FILE)
        (directory / REGISTERS_FILE).write_text(json.dumps(self.registers()))

    @classmethod
    def load(cls, directory: Path) -> Machine:
        registers = json.loads((directory / REGISTERS_FILE).read_text())
        return cls.resume(PhysicalMemory.load(directory / RAM_FILE), registers)

    @classmethod
    def resume(cls, memory: PhysicalMemory, registers: dict[str, Any]) -> Machine:
        """The machine whose RAM is `memory` (kept as it is) and whose registers are
        `registers` (from `registers()`): the same machine, in another process."""
        machine = cls(memory)
        handover = registers.get("handover")
        if handover is not None:
            machine.handover.load(int(handover))
        # Dumps written before devices existed carry only the handover register.
        machine.now_ns = int(registers.get("now_ns", 0))
        machine.iommu.load_registers(registers.get("iommu", {}))
        machine.pci.load_registers(registers.get("pci", []))
        return machine
