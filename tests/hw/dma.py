"""Helpers shared by the DMA tests: map a window, start an engine, read the ring back."""

from __future__ import annotations

from luod.hw.dma import DmaEngine
from luod.hw.io_pgtable import PageTableBuilder
from luod.hw.machine import Machine

WINDOW_IOVA = 0x1000_0000
DATA_PFN = 0x2000  # the window's frames, well below the table region


def start_dma(
    machine: Machine,
    builder: PageTableBuilder,
    bdf: str,
    *,
    pages: int = 2,
    seed: int = 7,
    rate_hz: int = 1_000_000,
    data_pfn: int = DATA_PFN,
) -> tuple[int, DmaEngine]:
    """A domain mapping `pages` frames at WINDOW_IOVA, attached to `bdf`, with the
    device's engine running on the whole window. Returns (root pfn, engine)."""
    root = builder.create_root()
    builder.map(root, WINDOW_IOVA, [(data_pfn, pages)])
    machine.iommu.attach(bdf, root)
    engine = machine.pci[bdf].dma
    engine.start(WINDOW_IOVA, pages << 12, seed, rate_hz)
    return root, engine


def ring_bytes(machine: Machine, pages: int = 2, data_pfn: int = DATA_PFN) -> bytes:
    """The window's frames read physically (no IOMMU involved)."""
    return machine.memory.read(data_pfn, pages)
