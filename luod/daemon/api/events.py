"""Events and participants: following the event bus, and taking part in updates
(register, ready, the acks of the barrier, resumed after the kexec).
"""

from __future__ import annotations

import errno

from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.daemon.errors import DaemonError
from luod.ipc import methods as m
from luod.ipc.messages import Request

group = MethodGroup("events")


@group("events.subscribe")
async def _events_subscribe(c: ClientConnection, p: m.EventsSubscribe, r: Request) -> Result:
    if c.subscriber is None:
        daemon = c.daemon
        c.follow(daemon.bus.subscribe(on_drop=lambda: daemon.drop_later(c, "fell behind")))
    recent = [e.as_json() for e in c.daemon.bus.recent()]
    return {"subscribed": True, "recent": recent}, []


@group("participant.register")
async def _participant_register(
    c: ClientConnection, p: m.ParticipantRegister, r: Request
) -> Result:
    host = c.daemon.host
    for name in p.sessions:
        host.outgoing(c.caller, name)  # must exist and be the caller's
    c.participant = c.daemon.orchestrator.roster.register(c, p.name, p.sessions)
    return {"name": p.name}, []


@group("participant.ready")
async def _participant_ready(c: ClientConnection, p: m.ParticipantReady, r: Request) -> Result:
    if c.participant is None:
        raise DaemonError("NotAParticipant", "register before reporting ready", errno=errno.EINVAL)
    c.daemon.orchestrator.roster.ready(c.participant)
    return {}, []


@group("participant.resumed")
async def _participant_resumed(c: ClientConnection, p: m.ParticipantResumed, r: Request) -> Result:
    c.daemon.orchestrator.resumed(c, p.name)
    return {}, []


@group("participant.ack")
async def _participant_ack(c: ClientConnection, p: m.ParticipantAck, r: Request) -> Result:
    c.daemon.orchestrator.roster.ack(c, p.update_id, p.phase, p.ok, p.reason)
    return {}, []
