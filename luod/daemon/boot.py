"""Cold boot of the emulated machine: build the hardware, start the first kernel on it.

This is the daemon's single entry into the lower layers at start-up (`daemon ->
kernel_model -> hw`). The imports live inside the function so that importing the daemon
package (for `--help`, `--version`, or a test of the argument parser) does not load the
machine model and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from luod.kernel_model.kernel import Kernel


def boot_machine(ram_bytes: int, kernel: str | None) -> Kernel:
    """Create a machine with `ram_bytes` of emulated RAM and cold-boot a kernel on it.

    Args:
        ram_bytes: size of emulated physical memory (sparse; costs nothing until written).
        kernel: `--kernel` as given: a bundled release, an image file, or None for the
            newest bundled release.

    Returns:
        The running kernel.
    """
    from luod.hw.machine import Machine
    from luod.kernel_model.kernel import Kernel

    # TODO: resolve `kernel` to an image once kernel_model.images can load one; until then
    # the machine always cold-boots the kernel model's default image.
    del kernel
    machine = Machine.create(ram_bytes)
    return Kernel.cold_boot(machine)
