"""The outgoing kernel's KHO: what it preserves and the root blob it hands over.

The root blob is a flattened device tree in one preserved page (allocated at start-up,
as `kho_init` does), so it survives and the next kernel finds it through the handover
register:

    / { compatible = "kho-v1"; preserved-memory-map = <u64 phys>;
        scratch-regions = <u64 addr, u64 size, ...>;
        NAME { preserved-data = <u64 phys>; blob-size = <u64>; }; ... };

Between `finalize` and `abort` (or the kexec) nothing may change: every mutation gets
EBUSY. Subtree data belongs to its owner, who must preserve the pages it lives in.
"""

from __future__ import annotations

import errno

import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import (
    KernelError,
    KhoFinalized,
    NoSuchSubtree,
    RootBlobFull,
    SubtreeExists,
)
from luod.kernel_model.extents import Extents
from luod.kernel_model.fdt import FdtNode, encode_fdt, trim_fdt
from luod.kernel_model.kho.formats import FORMATS, MemMapFormat
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import FrameAllocator

ROOT_MAP_PROP = "preserved-memory-map"
ROOT_SCRATCH_PROP = "scratch-regions"
SUBTREE_DATA_PROP = "preserved-data"
SUBTREE_SIZE_PROP = "blob-size"


class KhoOut:
    def __init__(self, memory: PhysicalMemory, mm: FrameAllocator, compatible: str) -> None:
        if compatible not in FORMATS:
            raise KernelError(
                f"KHO format {compatible!r} is not implemented", errno=errno.EOPNOTSUPP
            )
        self.memory = memory
        self.mm = mm
        self.format: MemMapFormat = FORMATS[compatible]
        self.preserved = PreservedSet(memory.frames, forbidden=mm.scratch_extents)
        self.subtrees: dict[str, tuple[int, int]] = {}
        self.root_pfn = mm.alloc_folio(0)
        self.preserved.add_folios([self.root_pfn], 0)
        self._map_frames: Extents | None = None

    @property
    def compatible(self) -> str:
        return self.format.compatible

    @property
    def finalized(self) -> bool:
        return self._map_frames is not None

    @property
    def root_phys(self) -> int:
        return self.root_pfn << PAGE_SHIFT

    def _mutable(self, what: str) -> None:
        if self.finalized:
            raise KhoFinalized(f"cannot {what}: KHO is finalized until abort or kexec")

    # -- preservation ---------------------------------------------------------------------

    def preserve_folios(self, pfns: npt.ArrayLike, order: int) -> None:
        """`kho_preserve_folio` for many folios of one order; all or nothing."""
        self._mutable("preserve")
        self.preserved.add_folios(pfns, order)

    def preserve_folio(self, pfn: int, order: int = 0) -> None:
        self.preserve_folios([pfn], order)

    def preserve_pages(self, pfn: int, npages: int) -> None:
        """`kho_preserve_pages`: split into naturally aligned blocks."""
        self._mutable("preserve")
        self.preserved.add_pages(pfn, npages)

    def unpreserve_folios(self, pfns: npt.ArrayLike, order: int) -> None:
        self._mutable("unpreserve")
        self.preserved.remove_folios(pfns, order)

    def unpreserve_folio(self, pfn: int, order: int = 0) -> None:
        self.unpreserve_folios([pfn], order)

    def unpreserve_pages(self, pfn: int, npages: int) -> None:
        self._mutable("unpreserve")
        self.preserved.remove_pages(pfn, npages)

    def alloc_preserved(self, npages: int) -> int:
        """`kho_alloc_preserve`: contiguous zeroed pages, allocated and preserved."""
        pfn = self.mm.alloc_extent(npages)
        try:
            self.preserve_pages(pfn, npages)
        except BaseException:
            self.mm.free_extent(pfn, npages)
            raise
        return pfn

    def free_preserved(self, pfn: int, npages: int) -> None:
        """`kho_unpreserve_free`: undo `alloc_preserved`."""
        self.unpreserve_pages(pfn, npages)
        self.mm.free_extent(pfn, npages)

    def preserve_folio_runs(self, runs: list[tuple[int, int]], order: int) -> None:
        """Preserve back-to-back folios given as runs (first pfn, count); all or nothing."""
        self._mutable("preserve")
        self.preserved.add_folio_runs(runs, order)

    def unpreserve_folio_runs(self, runs: list[tuple[int, int]], order: int) -> None:
        self._mutable("unpreserve")
        self.preserved.remove_folio_runs(runs, order)

    def set_format(self, compatible: str) -> None:
        """Pick the memory-map format the next kernel reads (negotiated at prepare)."""
        self._mutable("change the KHO format")
        if compatible not in FORMATS:
            raise KernelError(
                f"KHO format {compatible!r} is not implemented", errno=errno.EOPNOTSUPP
            )
        self.format = FORMATS[compatible]

    # -- subtrees -------------------------------------------------------------------------

    def add_subtree(self, name: str, phys: int, size: int) -> None:
        self._mutable("add a subtree")
        if name in self.subtrees:
            raise SubtreeExists(f"KHO subtree {name!r} already exists", obj=name)
        if phys < 0 or size < 0 or phys + size > self.memory.size_bytes:
            raise KernelError(f"KHO subtree {name!r} data lies outside RAM", obj=name)
        self.subtrees[name] = (phys, size)
        try:
            self._root_blob(0)
        except ValueError as exc:
            del self.subtrees[name]
            raise KernelError(f"bad KHO subtree name {name!r}: {exc}", obj=name) from exc
        except RootBlobFull:
            del self.subtrees[name]
            raise

    def remove_subtree(self, name: str) -> None:
        self._mutable("remove a subtree")
        if self.subtrees.pop(name, None) is None:
            raise NoSuchSubtree(f"no KHO subtree {name!r}", obj=name)

    # -- hand-over ------------------------------------------------------------------------

    def _root_blob(self, map_phys: int) -> bytes:
        root = FdtNode("")
        root.set_str("compatible", self.compatible)
        root.set_u64(ROOT_MAP_PROP, map_phys)
        root.set_u64_array(ROOT_SCRATCH_PROP, self.mm.scratch.to_u64_array())
        for name, (phys, size) in self.subtrees.items():
            node = root.add_child(name)
            node.set_u64(SUBTREE_DATA_PROP, phys)
            node.set_u64(SUBTREE_SIZE_PROP, size)
        blob = encode_fdt(root)
        if len(blob) > PAGE_SIZE:
            raise RootBlobFull(f"KHO root blob of {len(blob)} bytes exceeds one page")
        return blob

    def finalize(self) -> int:
        """Serialise the map, write the root blob; returns its physical address."""
        self._mutable("finalize")
        map_phys, used = self.format.write(self.preserved, self.mm, self.memory)
        try:
            blob = self._root_blob(map_phys)
        except BaseException:
            self.mm.free_extents(used)
            raise
        self.memory.write(self.root_pfn, blob.ljust(PAGE_SIZE, b"\0"))
        self._map_frames = used
        return self.root_phys

    def root_blob(self) -> bytes | None:
        """The root FDT as the next kernel will read it; None until `finalize`."""
        if not self.finalized:
            return None
        return trim_fdt(self.memory.read_at(self.root_phys, PAGE_SIZE), max_size=PAGE_SIZE)

    def abort(self) -> None:
        """Undo `finalize`: the map is freed and preservation may change again."""
        if self._map_frames is None:
            raise KernelError("KHO is not finalized")
        self.mm.free_extents(self._map_frames)
        self.memory.zero(self.root_pfn, 1)
        self._map_frames = None
