"""The request methods luod serves, and their parameters: the API contract.

One attrs class per method, registered in `METHODS`; the daemon structures every request's
`params` with the one strict converter (unknown keys, missing keys and wrong types are
refused with `luod.BadParams` naming the field). Clients send plain maps with these keys.
Results are maps documented on each class (`Result:`); the fds column says how many file
descriptors travel with the request or the reply.

Tokens are u64 integers. Sizes are byte counts. A TARGET is a bundled release string or
the path of an image file readable by the daemon.
"""

from __future__ import annotations

from typing import Literal

import attrs

from luod.ipc.convert import MethodRegistry

METHODS = MethodRegistry()

Direction = Literal["outgoing", "incoming"]


@METHODS.method("status")
@attrs.frozen
class Status:
    """Result: state, kernel {release, liveupdate_number, boot}, loaded, sessions,
    participants, blocking, last_update, machine {ram, resident}."""


@METHODS.method("kernel.list")
@attrs.frozen
class KernelList:
    """Result: {images: [{release, summary, reads, profiles}]}, oldest first."""


@METHODS.method("kernel.show")
@attrs.frozen
class KernelShow:
    """Result: one image: {release, summary, reads, profiles, write, source}."""

    target: str


@METHODS.method("kernel.write")
@attrs.frozen
class KernelWrite:
    """Flip the running kernel's write switch for one format. Result: {format, enabled}."""

    format: str
    enabled: bool


@METHODS.method("load")
@attrs.frozen
class Load:
    """Stage the next kernel (refused after prepare). Result: {loaded, compatible,
    problems}; an incompatible target is refused with luod.Incompatible."""

    target: str
    force: bool = False


@METHODS.method("check")
@attrs.frozen
class Check:
    """Result: {compatible, target, problems: [{format, reason, session, token, type}],
    objects: [{session, token, type, format}]}."""

    target: str


@METHODS.method("session.create")
@attrs.frozen
class SessionCreate:
    """A new outgoing session owned by the caller's uid. Result: a session object."""

    name: str


@METHODS.method("session.list")
@attrs.frozen
class SessionList:
    """Result: {sessions: [session objects]} the caller may see (root sees all)."""


@METHODS.method("session.show")
@attrs.frozen
class SessionShow:
    """Result: one session object. With no direction, outgoing is looked up first."""

    name: str
    direction: Direction | None = None


@METHODS.method("session.close")
@attrs.frozen
class SessionClose:
    """Outgoing: unpreserve every file newest first and drop the session. Result: {}."""

    name: str


@METHODS.method("session.retrieve")
@attrs.frozen
class SessionRetrieve:
    """Incoming: claim the session (once). Result: a session object."""

    name: str


@METHODS.method("session.finish")
@attrs.frozen
class SessionFinish:
    """Incoming: finish it; never-retrieved files are discarded. Result: {}."""

    name: str


@METHODS.method("memfd.preserve")
@attrs.frozen
class MemfdPreserve:
    """fds in: 1 (a regular file or a memfd; its bytes are copied). The daemon makes an
    emulated memfd with the copy (`size` truncates or extends it; default the source's
    size; a source memfd's seals are copied too), adds `seals`, and preserves it.
    Result: {token, size, seals}."""

    session: str
    token: int
    size: int | None = None
    seals: list[str] = attrs.field(factory=list)
    name: str = ""
    page_size: int = 4096


@METHODS.method("memfd.retrieve")
@attrs.frozen
class MemfdRetrieve:
    """fds out: 1 (a new real memfd holding a copy of the retrieved bytes, sealed like the
    emulated one, positioned at its pos). Result: {token, size, pos, seals}."""

    session: str
    token: int


@METHODS.method("file.unpreserve")
@attrs.frozen
class FileUnpreserve:
    """Outgoing: unpreserve one file (refused while others depend on it). Result: {}."""

    session: str
    token: int


@METHODS.method("file.retrieve")
@attrs.frozen
class FileRetrieve:
    """Incoming: retrieve any file type. Result: {token, type, format}."""

    session: str
    token: int


@METHODS.method("prepare")
@attrs.frozen
class Prepare:
    """Result: {state, target, formats}."""


@METHODS.method("freeze")
@attrs.frozen
class Freeze:
    """Result: {state}."""


@METHODS.method("cancel")
@attrs.frozen
class Cancel:
    """Result: {state}."""


@METHODS.method("finish")
@attrs.frozen
class Finish:
    """Finish every incoming session. Result: {state}."""


@METHODS.method("kexec")
@attrs.frozen
class Kexec:
    """From FROZEN into the loaded (or given) image; `force` skips the compatibility
    check. Result: as `update`."""

    target: str | None = None
    force: bool = False


@METHODS.method("update")
@attrs.frozen
class Update:
    """load, check, prepare, freeze, kexec in one go, with the participants' barrier;
    cancels everything on any failure. Result: {from, to, phases, blackout_ms, update_id}."""

    target: str
    timeout: float | None = None
    force: bool = False


@METHODS.method("boot.cold")
@attrs.frozen
class BootCold:
    """Power-cycle the machine: all memory lost. Result: {release}."""

    target: str | None = None


@METHODS.method("events.subscribe")
@attrs.frozen
class EventsSubscribe:
    """Start receiving `event` messages on this connection. Result: {subscribed: true}."""


@METHODS.method("participant.register")
@attrs.frozen
class ParticipantRegister:
    """Take part in updates: the daemon sends prepare/freeze events with an update_id and
    waits for `participant.ack` before going on. Result: {name}."""

    name: str
    sessions: list[str] = attrs.field(factory=list)


@METHODS.method("participant.ready")
@attrs.frozen
class ParticipantReady:
    """The participant has preserved what it needs. Result: {}."""


@METHODS.method("participant.resumed")
@attrs.frozen
class ParticipantResumed:
    """After a kexec: the participant has retrieved and resumed. Result: {}."""

    name: str


@METHODS.method("participant.ack")
@attrs.frozen
class ParticipantAck:
    """Answer to a prepare or freeze event. `ok` false (a NAK) cancels the update."""

    update_id: int
    phase: Literal["prepare", "freeze"]
    ok: bool = True
    reason: str | None = None
