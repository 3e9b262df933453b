"""The VMM's object graph, derived from its options alone: names, tokens, IOVAs, devices.

Owned here, and pure, so that `run` (which builds and preserves) and `resume` (which
retrieves and checks after the kexec) agree by construction: both call `layout_for` on the
same `VmmOptions`, the one thing preserved for the purpose.

The graph, in dependency (and token) order:

    token 1  ram     memfd, SIZE bytes in PAGE_SIZE folios: the guest's RAM and its pattern
    token 2  dma     memfd, 4K pages, 1 MiB per device: the devices' DMA rings, kept apart
                     from RAM so DMA never touches the pattern (absent with --vfio 0)
    token 3  iommu   iommufd mapping ram at IOVA 0 and dma right after it
    token 4+ devN    vfio-pci at 0000:01:00.N (buses 1, 2, ... as luod plugs them in),
                     bound to iommu, interrupts off
    then     vm      kvm-vm, and gmem, a 2 MiB guest_memfd bound to it (--guest-memfd)
    last     config  memfd holding `VmmOptions.to_config()` (not an object: memfd.preserve)

Object names are prefixed with the VMM's name (`vm1.ram`), since objects are held per uid
and one user may run several VMMs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import attrs

from luod_vmm.options import VmmOptions

__all__ = [
    "DMA_BYTES_PER_DEVICE",
    "GMEM_SIZE",
    "DmaWindow",
    "Layout",
    "ObjectPlan",
    "bdf_for",
    "layout_for",
    "seed_for",
]

DMA_BYTES_PER_DEVICE: Final = 1 << 20
GMEM_SIZE: Final = 2 << 20


@attrs.frozen
class ObjectPlan:
    """One preserved file: `key` names its role (`ram`, `dev0`, `config`...), `spec` is the
    `ObjectSpec` map for `object.create` (None for the config memfd), `file_type` what the
    session lists for it."""

    key: str
    token: int
    file_type: str
    spec: dict[str, Any] | None

    @property
    def object_name(self) -> str:
        assert self.spec is not None, f"{self.key} is not an object"
        name = self.spec["name"]
        assert isinstance(name, str)
        return name


@attrs.frozen
class DmaWindow:
    """One device's DMA engine: its ring of `length` bytes at `iova`."""

    bdf: str
    iova: int
    length: int
    seed: int
    rate: int

    def params(self) -> dict[str, Any]:
        """The `device.dma` request that starts it."""
        return attrs.asdict(self)


@attrs.frozen
class Layout:
    options: VmmOptions
    files: tuple[ObjectPlan, ...]
    """Every preserved file in token order; the config memfd is last."""
    dma: tuple[DmaWindow, ...]

    @property
    def objects(self) -> tuple[ObjectPlan, ...]:
        """The files that are daemon objects (all but the config memfd), in token order."""
        return tuple(f for f in self.files if f.spec is not None)

    @property
    def config(self) -> ObjectPlan:
        return self.files[-1]

    def file(self, key: str) -> ObjectPlan:
        for f in self.files:
            if f.key == key:
                return f
        raise KeyError(key)

    def has(self, key: str) -> bool:
        return any(f.key == key for f in self.files)


def bdf_for(index: int) -> str:
    """The BDF of the index-th PCI device luod plugs in (functions 0-7 of buses 1, 2...)."""
    return f"0000:{1 + index // 8:02x}:00.{index % 8}"


def seed_for(name: str, label: str) -> int:
    """A u64 derived from the VMM's name and a label (`dma0`...): deterministic."""
    digest = hashlib.sha256(f"luod-vmm\0{name}\0{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def layout_for(options: VmmOptions) -> Layout:
    name = options.name
    files: list[ObjectPlan] = []

    def add(key: str, file_type: str, spec: dict[str, Any] | None) -> None:
        if spec is not None:
            spec = {"name": f"{name}.{key}", **spec}
        files.append(ObjectPlan(key, len(files) + 1, file_type, spec))

    ram_type = "memfd" if options.page_size == 4096 else "memfd-hugetlb"
    add("ram", ram_type, {"type": "memfd", "size": options.memory, "page_size": options.page_size})
    maps: list[dict[str, Any]] = [{"memfd": f"{name}.ram", "iova": 0}]
    windows: list[DmaWindow] = []
    if options.vfio:
        add("dma", "memfd", {"type": "memfd", "size": options.vfio * DMA_BYTES_PER_DEVICE})
        maps.append({"memfd": f"{name}.dma", "iova": options.memory})
    add("iommu", "iommufd", {"type": "iommufd", "maps": maps})
    for index in range(options.vfio):
        bdf = bdf_for(index)
        add(
            f"dev{index}",
            "vfio-pci",
            {"type": "vfio-pci", "iommufd": f"{name}.iommu", "bdf": bdf, "irq": False},
        )
        iova = options.memory + index * DMA_BYTES_PER_DEVICE
        seed = seed_for(name, f"dma{index}")
        windows.append(DmaWindow(bdf, iova, DMA_BYTES_PER_DEVICE, seed, options.dma_rate))
    if options.guest_memfd:
        add("vm", "kvm-vm", {"type": "kvm-vm"})
        add("gmem", "guest_memfd", {"type": "guest_memfd", "vm": f"{name}.vm", "size": GMEM_SIZE})
    add("config", "memfd", None)
    return Layout(options, tuple(files), tuple(windows))
