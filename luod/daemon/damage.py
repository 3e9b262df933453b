"""What a kexec lost, as the update's record reports it (`damage`).

After the point of no return nothing is rolled back: the record lists, per session, what
the next kernel could not restore as a whole (`boot_damage`: a cold boot, a panic, an
unusable LUO device, a session that did not arrive, owners unknown), each naming the first
cause; failures of single files (retrieve, finish) are the kernel's own damage list.
"""

from __future__ import annotations

import errno
from typing import Any

from luod.daemon.errors import DaemonError, error_json
from luod.daemon.host import Host
from luod.daemon.owners import OWNERS_SESSION
from luod.kernel_model.errors import NoSuchSession


def boot_damage(host: Host, handed_over: list[str]) -> list[dict[str, Any]]:
    """Right after a kexec: what of the sessions `handed_over` the new kernel lost as a
    whole (cold boot, panic, unusable LUO device, a session missing, owners unknown),
    one entry per session, each naming the first cause."""
    kernel = host.kernel
    names = [n for n in handed_over if n != OWNERS_SESSION]

    def entry(session: str, step: str, exc: Exception) -> dict[str, Any]:
        return {"session": session, "token": None, "step": step, "error": error_json(exc)}

    def each(step: str, exc: Exception) -> list[dict[str, Any]]:
        return [entry(s, step, exc) for s in names]

    if kernel.boot_report.kind == "cold":
        reason = kernel.boot_report.reason or "no reason given"
        return each("boot", DaemonError("ColdBoot", f"the next kernel booted cold: {reason}"))
    if kernel.panicked is not None:
        return each("boot", DaemonError("KernelPanicked", kernel.panicked, errno=errno.EIO))
    if host.device_error is not None:
        return each(
            "deserialize", DaemonError("LuoUnavailable", host.device_error, errno=errno.EIO)
        )
    luo = kernel.liveupdate()
    damage = [
        entry(
            name,
            "boot",
            NoSuchSession(f"session {name!r} was handed over but did not arrive", obj=name),
        )
        for name in names
        if name not in luo.incoming
    ]
    if host.restore_error is not None:
        exc = host.restore_error
        lost = DaemonError(
            exc.name,
            f"owner unknown, only root may take it: {exc.message}",
            errno=exc.errno,
            obj=exc.obj,
        )
        damage += [entry(name, "restore", lost) for name in names if name in luo.incoming]
    return damage
