"""The next kernel's KHO: read the handover, reserve what was preserved, restore it.

`KhoIn.parse` trusts nothing: every pointer is bounds-checked, the root must be a valid FDT
with a `compatible` this kernel reads, the map must be consistent and keep clear of
scratch. Any failure raises `KhoRootRejected` with the cause; the kernel then boots cold
(all preserved memory lost), as Linux does when `kho_populate` rejects the handover.

Restoring checks what `kho_restore_folio` checks with its magic in `page->private`: the
memory was preserved, at this exact order, and is restored once.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import numpy.typing as npt

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.errors import KernelError, NoSuchSubtree, RestoreRefused
from luod.kernel_model.extents import Extents, Int64Array
from luod.kernel_model.fdt import FdtError, decode_fdt, trim_fdt
from luod.kernel_model.kho.formats import FORMATS, MemMapCorrupt
from luod.kernel_model.kho.outgoing import (
    ROOT_MAP_PROP,
    ROOT_SCRATCH_PROP,
    SUBTREE_DATA_PROP,
    SUBTREE_SIZE_PROP,
)
from luod.kernel_model.kho.preserved import PreservedSet, split_aligned
from luod.kernel_model.mm import FIRMWARE_FRAMES, ScratchLayout


class KhoRootRejected(Exception):
    """The handover cannot be used; `reason` says why. The kernel boots cold."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KhoIn:
    def __init__(
        self,
        root_phys: int,
        compatible: str,
        scratch: ScratchLayout,
        subtrees: dict[str, tuple[int, int]],
        preserved: PreservedSet,
        root_blob: bytes = b"",
    ) -> None:
        self.root_phys = root_phys
        self.root_blob = root_blob  # the FDT as handed over, for `luoctl kho dump`
        self.compatible = compatible
        self.scratch = scratch
        self.subtrees = subtrees
        self.preserved = preserved
        self.restored = PreservedSet(preserved.frames)
        self.preserved_extents = preserved.extents()

    @classmethod
    def parse(cls, memory: PhysicalMemory, root_phys: int, readable: Collection[str]) -> KhoIn:
        if root_phys % PAGE_SIZE or root_phys + PAGE_SIZE > memory.size_bytes:
            raise KhoRootRejected(f"KHO root address {root_phys:#x} is misaligned or outside RAM")
        try:
            page = memory.read_at(root_phys, PAGE_SIZE)
            root = decode_fdt(page, max_size=PAGE_SIZE)
            root_blob = trim_fdt(page, max_size=PAGE_SIZE)
            compatible = root.get_str("compatible")
            if compatible not in readable or compatible not in FORMATS:
                raise KhoRootRejected(
                    f"KHO root is {compatible!r}, this kernel reads {sorted(readable)}"
                )
            map_phys = root.get_u64(ROOT_MAP_PROP)
            scratch = ScratchLayout.from_u64_array(
                root.get_u64_array(ROOT_SCRATCH_PROP), memory.frames
            )
            subtrees: dict[str, tuple[int, int]] = {}
            for node in root.children:
                phys, size = node.get_u64(SUBTREE_DATA_PROP), node.get_u64(SUBTREE_SIZE_PROP)
                if phys + size > memory.size_bytes:
                    raise KhoRootRejected(f"KHO subtree {node.name!r} points outside RAM")
                subtrees[node.name] = (phys, size)
        except FdtError as exc:
            raise KhoRootRejected(f"KHO root blob is corrupt: {exc}") from exc
        except ValueError as exc:  # scratch table
            raise KhoRootRejected(f"KHO root blob is inconsistent: {exc}") from exc
        try:
            preserved = FORMATS[compatible].read(memory, map_phys)
        except MemMapCorrupt as exc:
            raise KhoRootRejected(f"KHO preserved-memory map is corrupt: {exc}") from exc
        kho = cls(root_phys, compatible, scratch, subtrees, preserved, root_blob)
        if kho.preserved_extents.total() != preserved.frame_count():
            raise KhoRootRejected("KHO preserved-memory map lists overlapping blocks")
        if kho.preserved_extents & scratch.extents():
            raise KhoRootRejected("KHO preserved-memory map marks frames in scratch")
        if kho.preserved_extents & Extents.of(0, FIRMWARE_FRAMES):
            raise KhoRootRejected("KHO preserved-memory map marks firmware frames (first MiB)")
        try:
            kho.restore_folio(root_phys >> PAGE_SHIFT, 0)
        except RestoreRefused as exc:
            raise KhoRootRejected("KHO root blob page is not itself preserved") from exc
        return kho

    # -- subtrees -------------------------------------------------------------------------

    def retrieve_subtree(self, name: str) -> tuple[int, int]:
        """(phys, size) of a named subtree's data."""
        try:
            return self.subtrees[name]
        except KeyError:
            raise NoSuchSubtree(f"no incoming KHO subtree {name!r}", obj=name) from None

    # -- restore --------------------------------------------------------------------------

    def _check_restorable(self, order: int, blocks: Int64Array) -> None:
        if not self.preserved.orders[order].all_set(blocks):
            missing = blocks[~self.preserved.orders[order].test(blocks)]
            pfn = int(missing[0]) << order
            raise RestoreRefused(self._why_not(pfn, order), obj=f"pfn {pfn:#x}")
        again = self.restored.orders[order].first_set(blocks)
        if again is not None:
            pfn = again << order
            raise RestoreRefused(f"frame {pfn:#x} was already restored", obj=f"pfn {pfn:#x}")

    def _why_not(self, pfn: int, order: int) -> str:
        for other in self.preserved.orders:
            if other.count and other.first_set(np.array([pfn >> other.order])) is not None:
                return (
                    f"frame {pfn:#x} was preserved at order {other.order}, "
                    f"not restored at the same granularity (order {order})"
                )
        return f"frame {pfn:#x} was never preserved"

    def restore_folios(self, pfns: npt.ArrayLike, order: int) -> None:
        try:
            p, first, last = self.preserved._folio_runs(pfns, order)
        except KernelError as exc:
            raise RestoreRefused(f"restore refused: {exc.message}") from exc
        if first.size <= PreservedSet.RANGE_PATH_MAX_RUNS:
            spans = list(
                zip((first >> order).tolist(), ((last >> order) + 1).tolist(), strict=True)
            )
            for b0, b1 in spans:
                self._check_restorable_range(order, b0, b1)
            for b0, b1 in spans:
                self.restored.orders[order].assign_range(b0, b1, True)
            return
        blocks = p >> order
        self._check_restorable(order, blocks)
        self.restored.orders[order].assign(blocks, True)

    def _check_restorable_range(self, order: int, b0: int, b1: int) -> None:
        if not self.preserved.orders[order].all_set_in_range(b0, b1):
            self._check_restorable(order, np.arange(b0, b1, dtype=np.int64))  # names the pfn
        again = self.restored.orders[order].first_set_in_range(b0, b1)
        if again is not None:
            pfn = again << order
            raise RestoreRefused(f"frame {pfn:#x} was already restored", obj=f"pfn {pfn:#x}")

    def restore_folio(self, pfn: int, order: int = 0) -> None:
        self.restore_folios([pfn], order)

    def restore_pages(self, pfn: int, npages: int) -> None:
        runs = split_aligned(pfn, npages)
        for order, b0, n in runs:
            self._check_restorable_range(order, b0, b0 + n)
        for order, b0, n in runs:
            self.restored.orders[order].assign_range(b0, b0 + n, True)

    def unrestored(self) -> Extents:
        """Frames preserved by the previous kernel that nobody has restored."""
        return self.preserved.extents(exclude=self.restored)
