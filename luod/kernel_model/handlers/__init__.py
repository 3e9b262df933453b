"""File handlers: one per preservable file type, each with the record formats it writes
and reads. `default_handlers` is what a booting kernel registers."""

from __future__ import annotations

from luod.kernel_model.handlers.devices_io import (
    IommuCoreFlb,
    IommufdHandler,
    PciFlb,
    VfioPciHandler,
)
from luod.kernel_model.handlers.devices_mem import (
    GuestMemfdHandler,
    HugetlbFlb,
    HugetlbMemfdHandler,
    KvmVmHandler,
)
from luod.kernel_model.handlers.memfd import MemfdHandler
from luod.kernel_model.luo.file import FileHandler, KernelServices
from luod.kernel_model.luo.flb import Flb

HANDLER_TYPES: tuple[type[FileHandler], ...] = (
    MemfdHandler,
    HugetlbMemfdHandler,
    KvmVmHandler,
    GuestMemfdHandler,
    IommufdHandler,
    VfioPciHandler,
)
"""Every handler the model has, in registration order; each names its file type, its
record formats and its FLBs as class attributes (the compatibility matrix reads them
without a kernel)."""


def default_handlers(kernel: KernelServices) -> list[FileHandler]:
    """In registration order: the first whose can_preserve accepts a file wins."""
    return [handler(kernel) for handler in HANDLER_TYPES]


def default_flbs(kernel: KernelServices) -> list[tuple[str, Flb]]:
    """(file type, FLB) links registered after the handlers."""
    return [
        ("memfd-hugetlb", HugetlbFlb(kernel)),
        ("iommufd", IommuCoreFlb(kernel)),
        ("vfio-pci", PciFlb(kernel)),
    ]
