"""Cold boot of the emulated machine at daemon start: image, command line, host.

This is the daemon's entry into the lower layers at start-up (`daemon -> kernel_model ->
hw`). The imports live inside the function so that `luod --help` and the argument parser's
tests do not load the machine model and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from luod.daemon.host import Host


def build_host(
    ram_bytes: int,
    kernel: str | None,
    *,
    limits: str = "unlimited",
    hugetlb: dict[int, int] | None = None,
    pci: int = 0,
) -> Host:
    """Create the machine with `ram_bytes` of emulated RAM and cold-boot `kernel` on it.

    Args:
        ram_bytes: size of emulated physical memory (sparse; costs nothing until written).
        kernel: `--kernel` as given: a bundled release, an image file, or None for the
            newest bundled release.
        limits: `--limits`: "unlimited" or "6.19".
        hugetlb: `--hugetlb` pools {page size: count}; a machine too small gets less.
        pci: `--pci`: how many PCI devices the machine has.

    Raises:
        luod.kernel_model.images.ImageError: `kernel` names no bundled release or readable
            image file; the message says which.
    """
    from luod.daemon.host import Host
    from luod.kernel_model.images import default_image, resolve
    from luod.kernel_model.kernel import BootConfig
    from luod.kernel_model.luo.state import Limits

    image = resolve(kernel) if kernel else default_image()
    config = BootConfig(limits=Limits.named(limits), hugetlb=tuple(sorted((hugetlb or {}).items())))
    return Host(ram=ram_bytes, image=image, config=config, pci=pci)
