"""The request methods luod serves, and their parameters: the API contract.

One attrs class per method, registered in `METHODS` (`luod.ipc.method_table`) with who may
call it (`access`), the fds it carries and whether it waits: the one table the dispatcher,
luoctl's commands and the docs derive from. Requests' `params` are structured by the one
strict converter (unknown or missing keys and wrong types: `luod.BadParams` naming the
field). Results are maps documented on each class (`Result:`).

Tokens are u64 integers. Sizes are byte counts. A TARGET is a bundled release string or
the path of an image file readable by the daemon.
"""

from __future__ import annotations

from typing import Literal

import attrs

from luod.ipc.method_table import MethodTable
from luod.ipc.plans import ObjectSpec, Plan

METHODS = MethodTable()

Direction = Literal["outgoing", "incoming"]


@METHODS.method("status", access="anyone")
@attrs.frozen
class Status:
    """Result: state, kernel {release, liveupdate_number, boot}, loaded, sessions,
    participants, blocking, last_update, last_cancel, machine {ram, resident}.
    `last_update.damage`: what its kernel could not restore ([{session, token, step,
    error}], kept current); `last_cancel`: the last update cancelled before its kexec
    {update_id, target, error (the first cause), rollback}; incoming files' `error`."""


@METHODS.method("kernel.list", access="anyone")
@attrs.frozen
class KernelList:
    """Result: {images: [{release, summary, reads, profiles}]}, oldest first."""


@METHODS.method("kernel.show", access="anyone")
@attrs.frozen
class KernelShow:
    """Result: one image: {release, summary, reads, profiles, write, source}."""

    target: str


@METHODS.method("kernel.matrix", access="anyone")
@attrs.frozen
class KernelMatrix:
    """Which ordered pairs of kernels can update into each other, per object type: the
    bundled releases (default write switches) plus `targets` (releases or image files).
    Result: {releases, types, pairs: [{from, to, compatible, refused: [TYPE], types: {TYPE:
    {format, formats, writes, reason}}}]}; compatible: every type the source writes goes
    through (`writes` false: not applicable); `refused` lists the others."""

    targets: list[str] = attrs.field(factory=list)


@METHODS.method("kernel.write", access="admin")
@attrs.frozen
class KernelWrite:
    """Flip the running kernel's write switch for one format. Result: {format, enabled}."""

    format: str
    enabled: bool


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


@METHODS.method("session.create", access="owner")
@attrs.frozen
class SessionCreate:
    """A new outgoing session owned by the caller's uid. Result: a session object."""

    name: str


@METHODS.method("session.list", access="owner")
@attrs.frozen
class SessionList:
    """Result: {sessions: [session objects]} the caller may see (root sees all)."""


@METHODS.method("session.show", access="owner")
@attrs.frozen
class SessionShow:
    """Result: one session object. With no direction, outgoing is looked up first."""

    name: str
    direction: Direction | None = None


@METHODS.method("session.close", access="owner")
@attrs.frozen
class SessionClose:
    """Outgoing: unpreserve every file newest first and drop the session. Result: {}."""

    name: str


@METHODS.method("session.retrieve", access="owner")
@attrs.frozen
class SessionRetrieve:
    """Incoming: claim the session (once). Result: a session object."""

    name: str


@METHODS.method("session.finish", access="owner")
@attrs.frozen
class SessionFinish:
    """Incoming: finish it; never-retrieved files are discarded. Result: {}."""

    name: str


@METHODS.method("memfd.preserve", access="owner", fds_in=(1, 1))
@attrs.frozen
class MemfdPreserve:
    """fds in: 1 (a regular file or a memfd; its bytes are copied). The daemon makes an
    emulated memfd with the copy (`size` truncates or extends it; default the source's
    size; a source memfd's seals are copied too), adds `seals`, and preserves it.
    `page_size` 2 MiB or 1 GiB makes a hugetlb memfd from the daemon's pools (anything but
    those and 4096 is luod.BadPageSize). Result: {token, size, seals, type}."""

    session: str
    token: int
    size: int | None = None
    seals: list[str] = attrs.field(factory=list)
    name: str = ""
    page_size: int = 4096


@METHODS.method("memfd.retrieve", access="owner", fds_out=1)
@attrs.frozen
class MemfdRetrieve:
    """fds out: 1 (a new real memfd holding a copy of the retrieved bytes, sealed like the
    emulated one, positioned at its pos). Result: {token, size, pos, seals}."""

    session: str
    token: int


@METHODS.method("file.unpreserve", access="owner")
@attrs.frozen
class FileUnpreserve:
    """Outgoing: unpreserve one file (refused while others depend on it). Result: {}."""

    session: str
    token: int


@METHODS.method("file.retrieve", access="owner")
@attrs.frozen
class FileRetrieve:
    """Incoming: retrieve any file type. Result: {token, type, format}."""

    session: str
    token: int


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


# -- objects (`luod.ipc.plans`): emulated files luod holds for their owner ------------------


@METHODS.method("object.create", access="owner", fds_in=(0, 1))
@attrs.frozen
class ObjectCreate:
    """fds in: 0 or 1 (for memfd and guest_memfd: initial bytes, copied). Creates an
    emulated object owned by the caller, not yet preserved. Result: an object summary."""

    object: ObjectSpec


@METHODS.method("object.preserve", access="owner")
@attrs.frozen
class ObjectPreserve:
    """Preserve a created object in an outgoing session. The daemon first checks that
    everything it depends on is already preserved in the same session (dependency order),
    naming the missing dependency and the order expected. Result: {session, token, type}."""

    session: str
    token: int
    name: str


@METHODS.method("object.list", access="owner")
@attrs.frozen
class ObjectList:
    """Result: {objects: [{name, type, preserved: {session, token} | null, depends_on}]}."""


@METHODS.method("object.close", access="owner")
@attrs.frozen
class ObjectClose:
    """Drop the caller's handle on an object (preserved ones live on in their session)."""

    name: str


@METHODS.method("apply", access="owner")
@attrs.frozen
class Apply:
    """Create every object of the plan (references resolved by name, any order), then
    preserve them in the listed order, the daemon validating that order. The first
    violation stops the plan; everything it created or preserved is released again.
    Result: {sessions: [session objects]}."""

    plan: Plan


@METHODS.method("file.reclaim", access="owner")
@attrs.frozen
class FileReclaim:
    """Incoming iommufd: re-create its IOAS mappings from the retrieved memfds and have the
    kernel verify them against the preserved page tables and adopt them. Result: {token,
    reclaimed: true}."""

    session: str
    token: int


@METHODS.method("device.set", access="owner")
@attrs.frozen
class DeviceSet:
    """A PCI device's state: interrupts on or off, power state. Result: the device."""

    bdf: str
    irq: bool | None = None
    power: Literal["D0", "D3hot"] | None = None


@METHODS.method("device.dma", access="owner")
@attrs.frozen
class DeviceDma:
    """Start (or stop, with length 0) a device's DMA engine writing a verifiable pattern
    into [iova, iova + length) through the IOMMU. Result: the device."""

    bdf: str
    iova: int = 0
    length: int = 0
    seed: int = 0
    rate: int = 1_000_000


@METHODS.method("device.show", access="anyone")
@attrs.frozen
class DeviceShow:
    """Result: {bdf, power, irq, dma: {writes, faults, writes_during_blackout, ...}}."""

    bdf: str


# -- fault injection: refused (luod.FaultsDisabled) unless luod runs with --enable-faults;
# the points and what a fault at each does: `fault.list`, luod/kernel_model/faults.py. ----


@METHODS.method("fault.arm", access="admin")
@attrs.frozen
class FaultArm:
    """Arm a named fault point: it fires `count` times (null: every time until cleared) at
    hits whose subject matches `match` (a file type, a session name, SESSION/TOKEN, or a
    release; null: any), failing that step with `errno` (a symbolic name). Arming a point
    again with the same match replaces that arm. Result: {point, count, errno, match}."""

    point: str
    count: int | None = 1
    errno: str = "EIO"
    match: str | None = None


@METHODS.method("fault.list", access="admin")
@attrs.frozen
class FaultList:
    """Result: {enabled, points: [{point, layer, after_kexec, description, consequence,
    armed: [arm]}], armed: [arm], fired: [{point, subject}] (the last 100)}."""


@METHODS.method("fault.clear", access="admin")
@attrs.frozen
class FaultClear:
    """Disarm one point, or every point when `point` is null. Result: {cleared: N}."""

    point: str | None = None
