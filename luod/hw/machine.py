"""The machine: RAM plus the handover register, the only things a kexec carries.

`dump` and `load` write and read a machine as files (a sparse RAM image and the register in
a small text file), so a test can boot the next kernel in a fresh process and prove that no
Python object of the old kernel was needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from luod.hw.handover import HandoverRegister
from luod.hw.memory import PhysicalMemory

RAM_FILE = "ram.img"
REGISTERS_FILE = "registers.json"


class Machine:
    def __init__(self, memory: PhysicalMemory) -> None:
        self.memory = memory
        self.handover = HandoverRegister()

    @classmethod
    def create(cls, ram_bytes: int) -> Machine:
        return cls(PhysicalMemory(ram_bytes))

    def power_cycle(self) -> None:
        """A cold reset: every byte of RAM and the register are lost."""
        self.memory.zero(0, self.memory.frames)
        self.handover.clear()

    def close(self) -> None:
        self.memory.close()

    def dump(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.memory.dump(directory / RAM_FILE)
        registers = {"handover": self.handover.peek()}
        (directory / REGISTERS_FILE).write_text(json.dumps(registers))

    @classmethod
    def load(cls, directory: Path) -> Machine:
        machine = cls(PhysicalMemory.load(directory / RAM_FILE))
        registers = json.loads((directory / REGISTERS_FILE).read_text())
        handover = registers.get("handover")
        if handover is not None:
            machine.handover.load(int(handover))
        return machine
