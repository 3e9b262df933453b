"""Methods of the update: load and check a target, the global phases, kexec, the one-call
`update`, a cold boot, events, and the participants that take part in the barrier."""

from __future__ import annotations

from typing import Literal

import attrs

from luod.ipc.methods.table import METHODS


@METHODS.method("load", access="admin")
@attrs.frozen
class Load:
    """Stage the next kernel (refused after prepare). Result: {loaded, compatible,
    problems}; an incompatible target is refused with luod.Incompatible."""

    target: str
    force: bool = False


@METHODS.method("check", access="anyone")
@attrs.frozen
class Check:
    """Result: {compatible, target, problems: [{format, reason, session, token, type}],
    objects: [{session, token, type, format}]}."""

    target: str


@METHODS.method("prepare", access="admin")
@attrs.frozen
class Prepare:
    """Result: {state, target, formats}."""


@METHODS.method("freeze", access="admin")
@attrs.frozen
class Freeze:
    """Result: {state}."""


@METHODS.method("cancel", access="admin")
@attrs.frozen
class Cancel:
    """Result: {state}."""


@METHODS.method("finish", access="admin")
@attrs.frozen
class Finish:
    """Finish every incoming session. Result: {state}."""


@METHODS.method("kexec", access="admin", waits=True)
@attrs.frozen
class Kexec:
    """From FROZEN into the loaded (or given) image; `force` skips the compatibility
    check. Result: as `update`."""

    target: str | None = None
    force: bool = False


@METHODS.method("update", access="admin", waits=True)
@attrs.frozen
class Update:
    """load, check, prepare, freeze, kexec in one go, with the participants' barrier;
    cancels everything on any failure before the kexec (the error is the first cause).
    `timeout` is each barrier's deadline and the participants' deadline to resume.
    Result: {from, to, phases, blackout_ms, update_id, boot, state, damage: [{session,
    token, step, error}] (what the next kernel could not restore), late, ...}."""

    target: str
    timeout: float | None = None
    force: bool = False


@METHODS.method("boot.cold", access="admin")
@attrs.frozen
class BootCold:
    """Power-cycle the machine: all memory lost. Result: {release}."""

    target: str | None = None


@METHODS.method("events.subscribe", access="anyone")
@attrs.frozen
class EventsSubscribe:
    """Start receiving `event` messages on this connection. Result: {subscribed: true}."""


@METHODS.method("participant.register", access="owner")
@attrs.frozen
class ParticipantRegister:
    """Take part in updates: the daemon sends prepare/freeze events with an update_id and
    waits for `participant.ack` before going on. Result: {name}."""

    name: str
    sessions: list[str] = attrs.field(factory=list)


@METHODS.method("participant.ready", access="owner")
@attrs.frozen
class ParticipantReady:
    """The participant has preserved what it needs. Result: {}."""


@METHODS.method("participant.resumed", access="owner")
@attrs.frozen
class ParticipantResumed:
    """After a kexec: the participant has retrieved and resumed. Result: {}."""

    name: str


@METHODS.method("participant.ack", access="owner")
@attrs.frozen
class ParticipantAck:
    """Answer to a prepare or freeze event. `ok` false (a NAK) cancels the update."""

    update_id: int
    phase: Literal["prepare", "freeze"]
    ok: bool = True
    reason: str | None = None
