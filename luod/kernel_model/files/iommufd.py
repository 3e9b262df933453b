"""iommufd and vfio-pci device files (reference/kernel.md §4.2, §4.3).

An `IommufdFile` owns one IOAS with one hardware page table (the HWPT, an IOMMU domain
whose tables live in emulated RAM). `map_file` maps a memfd's folios at an IOVA, as
IOMMU_IOAS_MAP_FILE does (holes are filled: the pages are pinned). A `VfioDeviceFile`
stands for a vfio cdev bound to a PCI device; binding it to an iommufd points the device's
IOMMU context at that domain, so its DMA translates through the tables.

After a kexec a retrieved iommufd is *restored*: its preserved domain keeps translating for
the devices still attached, but its IOAS is empty until userspace re-creates the mappings
and the kernel verifies them against the preserved tables (`reclaim`). A retrieved vfio
device stays bound to the preserved domain; binding it to another iommufd is EPERM.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar

import attrs
import numpy as np

from luod.hw.iommu import MappingError, PageTableBuilder, leaves
from luod.hw.memory import PAGE_SHIFT
from luod.hw.pci import PciDevice, PowerState
from luod.kernel_model.errors import KernelError
from luod.kernel_model.files.base import File
from luod.kernel_model.files.memfd import MemfdFile

if TYPE_CHECKING:
    from luod.hw.machine import Machine
    from luod.kernel_model.mm import FrameAllocator


@attrs.frozen
class Mapping:
    iova: int
    length: int
    memfd: MemfdFile
    offset: int


def memfd_runs(memfd: MemfdFile, offset: int, length: int) -> list[tuple[int, int]]:
    """(pfn, npages) runs backing [offset, offset + length) of a fully populated memfd,
    in file order."""
    index, pfns, counts, _ = memfd.folio_runs()
    shift = memfd.folio_order
    first, last = offset >> PAGE_SHIFT, (offset + length) >> PAGE_SHIFT  # pages
    runs: list[tuple[int, int]] = []
    covered = first
    for idx, pfn, n in zip(index.tolist(), pfns.tolist(), counts.tolist(), strict=True):
        lo, hi = max(idx << shift, first), min((idx + n) << shift, last)
        if hi <= lo:
            continue
        if lo != covered:
            raise KernelError(f"{memfd.describe()} has a hole at page {covered:#x}")
        runs.append((pfn + lo - (idx << shift), hi - lo))
        covered = hi
    if covered != last:
        raise KernelError(f"{memfd.describe()} has a hole at page {covered:#x}")
    return runs


def merged_runs(
    iova: np.ndarray, pfn: np.ndarray, npages: np.ndarray
) -> list[tuple[int, int, int]]:
    """(iova page, pfn, npages) runs sorted by IOVA, merged where both are contiguous."""
    order = np.argsort(iova, kind="stable")
    out: list[tuple[int, int, int]] = []
    for v, p, n in zip(
        iova[order].tolist(), pfn[order].tolist(), npages[order].tolist(), strict=True
    ):
        if out and out[-1][0] + out[-1][2] == v and out[-1][1] + out[-1][2] == p:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
        else:
            out.append((v, p, n))
    return out


class IommufdFile(File):
    file_type: ClassVar[str] = "iommufd"

    def __init__(self, machine: Machine, mm: FrameAllocator, *, root: int | None = None) -> None:
        super().__init__()
        self.machine = machine
        self.mm = mm
        self.builder = PageTableBuilder(
            machine.memory,
            alloc_page=lambda: mm.alloc_folio(0),
            free_page=lambda p: mm.free_extent(p, 1),
        )
        self.restored = root is not None
        self.reclaimed = not self.restored
        self.root = root if root is not None else self.builder.create_root()
        self.mappings: list[Mapping] = []
        self.devices: list[VfioDeviceFile] = []

    def describe(self) -> str:
        state = " (restored, not reclaimed)" if self.restored and not self.reclaimed else ""
        return f"iommufd inode {self.inode}{state}"

    def map_file(
        self, memfd: MemfdFile, *, iova: int, offset: int = 0, length: int | None = None
    ) -> None:
        """IOMMU_IOAS_MAP_FILE: pin (fill) the memfd's pages and map them at `iova`."""
        if self.restored and not self.reclaimed:
            raise KernelError(f"{self.describe()}: reclaim before mapping", errno=errno.EBUSY)
        length = memfd.size - offset if length is None else length
        if length <= 0 or (offset | length | iova) % 4096:
            raise KernelError(
                f"{self.describe()}: mapping of {length} bytes at offset {offset:#x}, "
                f"IOVA {iova:#x} is not page aligned",
                errno=errno.EINVAL,
            )
        if offset + length > memfd.size:
            raise KernelError(f"{self.describe()}: mapping runs past the end of {memfd.describe()}")
        memfd.fill_holes()
        runs = memfd_runs(memfd, offset, length)
        try:
            self.builder.map(self.root, iova, runs, max_page=4096 << max(memfd.folio_order, 0))
        except MappingError as exc:
            raise KernelError(f"{self.describe()}: {exc}", errno=errno.EEXIST) from exc
        memfd.get()  # the IOAS holds the memfd while it is mapped
        self.mappings.append(Mapping(iova, length, memfd, offset))

    def leaf_runs(self) -> list[tuple[int, int, int]]:
        found = leaves(self.machine.memory, self.root)
        return merged_runs(found.iova >> PAGE_SHIFT, found.pfn, found.size >> PAGE_SHIFT)

    def reclaim(self, proposed: list[Mapping]) -> None:
        """Userspace's re-created IOAS must map exactly what the preserved tables map;
        then the iommufd adopts the preserved domain. A mismatch is EINVAL and changes
        nothing."""
        if not self.restored or self.reclaimed:
            raise KernelError(f"{self.describe()}: nothing to reclaim", errno=errno.EINVAL)
        iova, pfn, npages = [], [], []
        for m in proposed:
            try:
                runs = memfd_runs(m.memfd, m.offset, m.length)
            except KernelError as exc:
                raise KernelError(f"{self.describe()}: reclaim refused: {exc.message}") from exc
            at = m.iova >> PAGE_SHIFT
            for p, n in runs:
                iova.append(at)
                pfn.append(p)
                npages.append(n)
                at += n
        want = merged_runs(
            np.array(iova, dtype=np.int64),
            np.array(pfn, dtype=np.int64),
            np.array(npages, dtype=np.int64),
        )
        have = self.leaf_runs()
        if want != have:
            diff = next(
                (i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b),
                min(len(want), len(have)),
            )
            raise KernelError(
                f"{self.describe()}: reclaim refused: the mappings do not match the preserved "
                f"page tables (first difference at run {diff}: proposed "
                f"{want[diff] if diff < len(want) else 'nothing'}, preserved "
                f"{have[diff] if diff < len(have) else 'nothing'})",
                errno=errno.EINVAL,
            )
        for m in proposed:
            m.memfd.get()
            self.mappings.append(m)
        self.reclaimed = True

    def release(self) -> None:
        for device in list(self.devices):
            device.unbind()
        self.builder.destroy(self.root)
        for m in self.mappings:
            m.memfd.put()
        self.mappings.clear()


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
