"""The boot handover register: the one value a kexec passes to the next kernel.

It holds the physical address of the KHO root blob (or nothing, for a cold boot). Reading
it at boot consumes it, as firmware-provided boot parameters are read once.
"""

from __future__ import annotations


class HandoverRegister:
    def __init__(self) -> None:
        self._value: int | None = None

    def load(self, phys: int) -> None:
        if phys < 0:
            raise ValueError(f"handover address {phys:#x} is negative")
        self._value = phys

    def clear(self) -> None:
        self._value = None

    def peek(self) -> int | None:
        return self._value

    def take(self) -> int | None:
        """Read and clear, as the next kernel does at boot."""
        value, self._value = self._value, None
        return value
