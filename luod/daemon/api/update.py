"""The update: stage and check the next kernel, the global events one by one, the whole
update (`update`, `kexec`: the orchestrator's, they wait), and the cold boot.
"""

from __future__ import annotations

import errno

from luod.daemon import compat
from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.daemon.errors import DaemonError
from luod.ipc import methods as m
from luod.ipc.messages import Request

group = MethodGroup("update")


@group("load")
async def _load(c: ClientConnection, p: m.Load, r: Request) -> Result:
    host = c.daemon.host
    image = host.image(p.target)
    report = compat.check(host.kernel, image)
    if not report["compatible"] and not p.force:
        raise compat.refusal(report)
    host.kernel.load(image)
    c.daemon.bus.publish("loaded", release=image.release)
    return {
        "loaded": image.release,
        "compatible": report["compatible"],
        "problems": report["problems"],
    }, []


@group("check")
async def _check(c: ClientConnection, p: m.Check, r: Request) -> Result:
    host = c.daemon.host
    return compat.check(host.kernel, host.image(p.target)), []


@group("prepare")
async def _prepare(c: ClientConnection, p: m.Prepare, r: Request) -> Result:
    host = c.daemon.host
    loaded = host.kernel.loaded
    # Prepared or frozen by hand, the machine is mid-update until cancel or kexec: a crash
    # meanwhile loses these sessions, and the run record says so.
    c.daemon.record_phase("prepare", None, (loaded or host.kernel).release)
    try:
        host.prepare()
    except BaseException:
        if host.kernel.state == "normal":  # refused or rolled back: nothing in flight
            c.daemon.record_phase(None, None, None)
        raise
    luo = host.kernel.liveupdate()
    c.daemon.bus.publish("prepared", target=luo.target.release if luo.target else None)
    return {
        "state": host.kernel.state,
        "target": luo.target.release if luo.target else None,
        "formats": dict(luo.formats),
    }, []


@group("freeze")
async def _freeze(c: ClientConnection, p: m.Freeze, r: Request) -> Result:
    c.daemon.uapi.live.sync()  # luod-run's live memfds: the bytes written last
    luo = c.daemon.host.kernel.liveupdate()
    c.daemon.record_phase("freeze", None, luo.target.release if luo.target else None)
    try:
        c.daemon.host.kernel.freeze()
    except BaseException:
        if c.daemon.host.kernel.state == "normal":  # the failed freeze cancelled it all
            c.daemon.record_phase(None, None, None)
        raise
    c.daemon.bus.publish("frozen")
    return {"state": c.daemon.host.kernel.state}, []


@group("cancel")
async def _cancel(c: ClientConnection, p: m.Cancel, r: Request) -> Result:
    c.daemon.host.kernel.cancel()
    c.daemon.record_phase(None, None, None)
    c.daemon.bus.publish("cancelled", reason="requested")
    return {"state": c.daemon.host.kernel.state}, []


@group("finish")
async def _finish(c: ClientConnection, p: m.Finish, r: Request) -> Result:
    c.daemon.host.finish_all(c.caller)
    c.daemon.bus.publish("finished")
    return {"state": c.daemon.host.kernel.state}, []


@group("kexec")
async def _kexec(c: ClientConnection, p: m.Kexec, r: Request) -> Result:
    return await c.daemon.orchestrator.kexec(p.target, force=p.force, requester=c), []


@group("update")
async def _update(c: ClientConnection, p: m.Update, r: Request) -> Result:
    orch = c.daemon.orchestrator
    return await orch.update(p.target, timeout=p.timeout, force=p.force, requester=c), []


@group("boot.cold")
async def _boot_cold(c: ClientConnection, p: m.BootCold, r: Request) -> Result:
    daemon = c.daemon
    if daemon.orchestrator.lock.locked():
        raise DaemonError("UpdateInProgress", "an update is running", errno=errno.EBUSY)
    image = daemon.host.image(p.target) if p.target else None
    daemon.userspace_dies(keep=c)
    kernel = daemon.host.boot_cold(image)
    daemon.record_phase(None, None, None)
    daemon.bus.publish("boot.cold", release=kernel.release)
    return {"release": kernel.release, "state": kernel.state}, []
