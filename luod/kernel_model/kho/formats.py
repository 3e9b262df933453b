"""Which preserved-memory-map implementation a KHO `compatible` string names.

A KHO format is a writer and a reader of the preserved-memory map; the root FDT around it
is common. Two generations are registered: `kho-v1` (per-order bitmaps in linked chunks)
and `kho-v2` (the 2026 radix tree, one tree for all orders).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import attrs

from luod.hw.memory import PhysicalMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.kho import memmap_v1, memmap_v2
from luod.kernel_model.kho.memmap_v1 import MemMapCorrupt
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import FrameAllocator

__all__ = ["FORMATS", "MemMapCorrupt", "MemMapFormat"]

Writer = Callable[[PreservedSet, FrameAllocator, PhysicalMemory], tuple[int, Extents]]
Reader = Callable[[PhysicalMemory, int], PreservedSet]


@attrs.frozen
class MemMapFormat:
    compatible: str
    write: Writer
    read: Reader

    @classmethod
    def of_module(cls, module: ModuleType) -> MemMapFormat:
        return cls(module.COMPATIBLE, module.write, module.read)


FORMATS: dict[str, MemMapFormat] = {
    f.compatible: f for f in (MemMapFormat.of_module(m) for m in (memmap_v1, memmap_v2))
}
