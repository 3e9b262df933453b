"""What a kexec lost, as the update's record reports it (`damage`).

After the point of no return nothing is rolled back: the record lists, per session, what
the next kernel could not restore as a whole (`boot_damage`: a cold boot, a panic, an
unusable LUO device, a session that did not arrive, owners unknown), each naming the first
cause; failures of single files (retrieve, finish) are the kernel's own damage list.
"""

from __future__ import annotations

from typing import Any

from luod.daemon.errors import error_json
from luod.daemon.host import Host
from luod.daemon.owners import OWNERS_SESSION


def boot_damage(host: Host, handed_over: list[str]) -> list[dict[str, Any]]:
    """Right after a kexec: what of the sessions `handed_over` the new kernel lost as a
    whole (cold boot, panic, unusable LUO device, a session missing, owners unknown),
    one entry per session, each naming the first cause."""
    kernel = host.kernel
    names = [n for n in handed_over if n != OWNERS_SESSION]

    def each(step: str, name: str, errno_: str | None, message: str) -> list[dict[str, Any]]:
        error = {"name": f"luod.{name}", "errno": errno_, "message": message, "object": None}
        return [{"session": s, "token": None, "step": step, "error": error} for s in names]

    if kernel.boot_report.kind == "cold":
        reason = kernel.boot_report.reason or "no reason given"
        return each("boot", "ColdBoot", None, f"the next kernel booted cold: {reason}")
    if kernel.panicked is not None:
        return each("boot", "KernelPanicked", "EIO", kernel.panicked)
    if host.device_error is not None:
        return each("deserialize", "LuoUnavailable", "EIO", host.device_error)
    luo = kernel.liveupdate()
    damage = [
        {
            "session": name,
            "token": None,
            "step": "boot",
            "error": {
                "name": "luod.NoSuchSession",
                "errno": "ENOENT",
                "message": f"session {name!r} was handed over but did not arrive",
                "object": name,
            },
        }
        for name in names
        if name not in luo.incoming
    ]
    if host.restore_error is not None:
        exc = host.restore_error
        error: dict[str, Any] = {
            **error_json(exc),
            "message": f"owner unknown, only root may take it: {exc.message}",
        }
        damage += [
            {
                "session": name,
                "token": None,
                "step": "restore",
                "error": dict(error),
            }
            for name in names
            if name in luo.incoming
        ]
    return damage
