"""Cold boot of the emulated machine at daemon start: image, command line, host.

This is the daemon's entry into the lower layers at start-up (`daemon -> kernel_model ->
hw`). The imports live inside the function so that `luod --help` and the argument parser's
tests do not load the machine model and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from luod.daemon.host import Host
    from luod.daemon.machine_store import MachineStore

log = structlog.get_logger("luod")


def build_host(
    ram_bytes: int,
    kernel: str | None,
    *,
    limits: str = "unlimited",
    hugetlb: dict[int, int] | None = None,
    pci: int = 0,
    store: MachineStore | None = None,
    planned_restart: bool = False,
    cold_reason: str | None = None,
) -> tuple[Host, dict[str, Any] | None]:
    """Create the machine with `ram_bytes` of emulated RAM and cold-boot `kernel` on it.

    Args:
        ram_bytes: size of emulated physical memory (sparse; costs nothing until written).
        kernel: `--kernel` as given: a bundled release, an image file, or None for the
            newest bundled release.
        limits: `--limits`: "unlimited" or "6.19".
        hugetlb: `--hugetlb` pools {page size: count}; a machine too small gets less.
        pci: `--pci`: how many PCI devices the machine has.
        store: where a previous luod may have kept the machine (`machine_store`): its RAM
            is used, and if it left a handover, the kernel boots from it as after a kexec
            (into the release that ran then), and the handover is returned with the host.
        planned_restart: the run record says the previous run stopped to be restarted.
        cold_reason: why a cold boot is one (the previous run crashed), for `status`.

    Raises:
        luod.kernel_model.images.ImageError: `kernel` names no bundled release or readable
            image file; the message says which.
    """
    from luod.daemon.host import Host, pci_bdfs
    from luod.hw.machine import Machine
    from luod.kernel_model.images import ImageError, default_image, resolve
    from luod.kernel_model.kernel import BootConfig
    from luod.kernel_model.luo.state import Limits

    image = resolve(kernel) if kernel else default_image()
    config = BootConfig(limits=Limits.named(limits), hugetlb=tuple(sorted((hugetlb or {}).items())))
    if store is None:
        return Host(ram=ram_bytes, image=image, config=config, pci=pci), None
    memory = store.open_memory(ram_bytes)
    try:
        blob = store.take_handover(ram_bytes, planned=planned_restart)
        machine: Machine | None = None
        if blob is not None:
            try:
                machine = Machine.resume(memory, blob["registers"])
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                store.refused = f"the machine's registers are unusable: {exc!r}"
                log.warning("handover_refused", error=store.refused)
                blob = None
        if machine is None or blob is None:
            machine = Machine(memory)
            for bdf in pci_bdfs(pci):
                machine.pci.add(bdf)
        else:
            try:
                image = resolve(str(blob["release"]))
            except ImageError as exc:
                log.warning("restart_release_unavailable", release=blob["release"], error=str(exc))
        reason = store.refused or cold_reason if blob is None else None
        host = Host(ram=ram_bytes, image=image, config=config, machine=machine, cold_reason=reason)
        return host, blob
    except BaseException:
        memory.close()
        raise
