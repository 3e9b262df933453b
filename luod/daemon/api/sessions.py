"""Sessions, held by luod for their creator's uid: create, list, show, close, retrieve,
finish. Ownership is the host's (`luod.daemon.owners`); every change is published.
"""

from __future__ import annotations

from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.ipc import methods as m
from luod.ipc.messages import Request
from luod.kernel_model.errors import KernelError

group = MethodGroup("sessions")


@group("session.create")
async def _session_create(c: ClientConnection, p: m.SessionCreate, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.session_create(c.caller, p.name)
    c.daemon.bus.publish("session.created", name=p.name, uid=c.caller.uid)
    return result, []


@group("session.list")
async def _session_list(c: ClientConnection, p: m.SessionList, r: Request) -> Result:
    return {"sessions": c.daemon.host.sessions(c.caller)}, []


@group("session.show")
async def _session_show(c: ClientConnection, p: m.SessionShow, r: Request) -> Result:
    host = c.daemon.host
    if p.direction != "incoming":
        try:
            return host.session_object(host.outgoing(c.caller, p.name)), []
        except KernelError:
            if p.direction == "outgoing":
                raise
    return host.session_object(host.incoming(c.caller, p.name)), []


@group("session.close")
async def _session_close(c: ClientConnection, p: m.SessionClose, r: Request) -> Result:
    c.daemon.host.session_close(c.caller, p.name)
    c.daemon.bus.publish("session.closed", name=p.name)
    return {}, []


@group("session.retrieve")
async def _session_retrieve(c: ClientConnection, p: m.SessionRetrieve, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.session_retrieve(c.caller, p.name)
    c.daemon.bus.publish("session.retrieved", name=p.name)
    return result, []


@group("session.finish")
async def _session_finish(c: ClientConnection, p: m.SessionFinish, r: Request) -> Result:
    c.daemon.host.session_finish(c.caller, p.name)
    c.daemon.bus.publish("session.finished", name=p.name, state=c.daemon.host.kernel.state)
    return {}, []


@group("uapi.attach")
async def _uapi_attach(c: ClientConnection, p: m.UapiAttach, r: Request) -> Result:
    return {}, [c.daemon.uapi.attach(c.caller.uid, admin=c.access.admin)]
