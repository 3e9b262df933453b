"""The preservable file types of the model, in registration order: the one list of them.

Each type lives in its own package (`memfd`, `kvm`, `iommufd`, `vfio_pci`), beside its
live-update code as the kernel keeps `mm/memfd_luo.c` next to `mm/memfd.c`: the file
objects, the handlers with their record formats, and the FLBs, named by the package as
`HANDLERS` and `FLBS`. Adding a file type is adding a package and a line to
`TYPE_PACKAGES`.
"""

from __future__ import annotations

from types import ModuleType

from luod.kernel_model import iommufd, kvm, memfd, vfio_pci
from luod.kernel_model.luo.file import FileHandler, KernelServices
from luod.kernel_model.luo.flb import Flb

TYPE_PACKAGES: tuple[ModuleType, ...] = (memfd, kvm, iommufd, vfio_pci)

HANDLER_TYPES: tuple[type[FileHandler], ...] = tuple(
    handler for package in TYPE_PACKAGES for handler in package.HANDLERS
)
"""Every handler the model has, in registration order; each names its file type, its
record formats and its FLBs as class attributes (the compatibility matrix reads them
without a kernel)."""

FLB_TYPES: tuple[type[Flb], ...] = tuple(flb for package in TYPE_PACKAGES for flb in package.FLBS)


def default_handlers(kernel: KernelServices) -> list[FileHandler]:
    """In registration order: the first whose can_preserve accepts a file wins."""
    return [handler(kernel) for handler in HANDLER_TYPES]


def default_flbs(kernel: KernelServices) -> list[tuple[str, Flb]]:
    """(file type, FLB) links registered after the handlers: each handler's `flbs`
    names the FLBs its files depend on."""
    return [
        (handler.file_type, flb(kernel))
        for handler in HANDLER_TYPES
        for flb in FLB_TYPES
        if flb.compatible in handler.flbs
    ]
