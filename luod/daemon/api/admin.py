"""Admin interfaces: the running kernel's write switches, and fault injection (`fault.*`),
for tests, ours and users': admin methods (the dispatcher refuses anyone else), and
`fault.*` is refused with `luod.FaultsDisabled` unless the daemon was started with
`--enable-faults`. A fired fault is published as a `fault.fired` event.
"""

from __future__ import annotations

import errno

from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.daemon.errors import DaemonError
from luod.ipc import methods as m
from luod.ipc.messages import Request

group = MethodGroup("admin")


def _faults_enabled(c: ClientConnection, method: str) -> None:
    if not c.daemon.faults_enabled:
        raise DaemonError(
            "FaultsDisabled",
            f"{method} is refused: fault injection is off (start luod with --enable-faults)",
            errno=errno.EPERM,
        )


@group("kernel.write")
async def _kernel_write(c: ClientConnection, p: m.KernelWrite, r: Request) -> Result:
    return c.daemon.host.set_write(p.format, p.enabled), []


@group("fault.arm")
async def _fault_arm(c: ClientConnection, p: m.FaultArm, r: Request) -> Result:
    _faults_enabled(c, "fault.arm")
    arm = c.daemon.host.faults.arm(p.point, count=p.count, errno=p.errno, match=p.match)
    c.daemon.bus.publish("fault.armed", **arm.as_json())
    return arm.as_json(), []


@group("fault.list")
async def _fault_list(c: ClientConnection, p: m.FaultList, r: Request) -> Result:
    _faults_enabled(c, "fault.list")
    return {"enabled": True, **c.daemon.host.faults.as_json()}, []


@group("fault.clear")
async def _fault_clear(c: ClientConnection, p: m.FaultClear, r: Request) -> Result:
    _faults_enabled(c, "fault.clear")
    cleared = c.daemon.host.faults.clear(p.point)
    c.daemon.bus.publish("fault.cleared", point=p.point, cleared=cleared)
    return {"cleared": cleared}, []
