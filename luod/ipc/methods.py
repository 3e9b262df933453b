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
    participants, blocking, last_update, last_cancel, machine {ram, resident}.
    `last_update.damage` lists what the last update's kernel could not restore
    ([{session, token, step, error}], kept current); `last_cancel` is the last update
    cancelled before its kexec: {update_id, target, error (the first cause), rollback}.
    An incoming session's files carry `error`: why their retrieve failed."""


@METHODS.method("kernel.list")
@attrs.frozen
class KernelList:
    """Result: {images: [{release, summary, reads, profiles}]}, oldest first."""


@METHODS.method("kernel.show")
@attrs.frozen
class KernelShow:
    """Result: one image: {release, summary, reads, profiles, write, source}."""

    target: str


@METHODS.method("kernel.matrix")
@attrs.frozen
class KernelMatrix:
    """Which ordered pairs of kernels can update into each other, per object type: the
    bundled releases (default write switches) plus `targets` (releases or image files).
    Result: {releases, types, pairs: [{from, to, compatible, refused: [TYPE], types:
    {TYPE: {format, formats, writes, reason}}}]}; a pair is compatible when every type its
    source writes goes through (`writes` false: not applicable); `refused` lists the
    others."""

    targets: list[str] = attrs.field(factory=list)


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
    cancels everything on any failure before the kexec (the error is the first cause).
    `timeout` is each barrier's deadline and the participants' deadline to resume.
    Result: {from, to, phases, blackout_ms, update_id, boot, state, damage: [{session,
    token, step, error}] (what the next kernel could not restore), late, ...}."""

    target: str
    timeout: float | None = None
    force: bool = False


@METHODS.method("uapi.attach")
@attrs.frozen
class UapiAttach:
    """luod-run's start: a gateway for an unmodified program's /dev/liveupdate calls.
    Result: {}; one fd: the program's end of the gateway (a SOCK_SEQPACKET socket)."""


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


# -- objects: emulated files held by luod for their owner, created before preservation ------

ObjectType = Literal["memfd", "iommufd", "vfio-pci", "kvm-vm", "guest_memfd"]


@attrs.frozen
class IommuMap:
    """One memfd mapped into an iommufd's IOAS: at `iova` (default: after the previous)."""

    memfd: str
    iova: int | None = None


@attrs.frozen
class ObjectSpec:
    """One object of a plan or of `object.create`. Which fields apply depends on `type`:
    memfd: size, page_size (4096, 2M or 1G: 2M and 1G take huge pages from the hugetlb
    pools); iommufd: maps; vfio-pci: iommufd, bdf, irq; kvm-vm: vm_type; guest_memfd: vm,
    size. `token` is used by `apply` only."""

    name: str
    type: ObjectType
    token: int | None = None
    size: int | None = None
    page_size: int = 4096
    maps: list[IommuMap] = attrs.field(factory=list)
    iommufd: str | None = None
    bdf: str | None = None
    irq: bool = False
    vm: str | None = None
    vm_type: int = 0


@METHODS.method("object.create")
@attrs.frozen
class ObjectCreate:
    """fds in: 0 or 1 (for memfd and guest_memfd: initial bytes, copied). Creates an
    emulated object owned by the caller, not yet preserved. Result: an object summary."""

    object: ObjectSpec


@METHODS.method("object.preserve")
@attrs.frozen
class ObjectPreserve:
    """Preserve a created object in an outgoing session. The daemon first checks that
    everything it depends on is already preserved in the same session (dependency order),
    naming the missing dependency and the order expected. Result: {session, token, type}."""

    session: str
    token: int
    name: str


@METHODS.method("object.list")
@attrs.frozen
class ObjectList:
    """Result: {objects: [{name, type, preserved: {session, token} | null, depends_on}]}."""


@METHODS.method("object.close")
@attrs.frozen
class ObjectClose:
    """Drop the caller's handle on an object (preserved ones live on in their session)."""

    name: str


@attrs.frozen
class PlanSession:
    name: str
    object: list[ObjectSpec] = attrs.field(factory=list)


@attrs.frozen
class Plan:
    session: list[PlanSession] = attrs.field(factory=list)


@METHODS.method("apply")
@attrs.frozen
class Apply:
    """Create every object of the plan (references resolved by name, any order), then
    preserve them in the listed order, the daemon validating that order. The first
    violation stops the plan; everything it created or preserved is released again.
    Result: {sessions: [session objects]}."""

    plan: Plan


@METHODS.method("file.reclaim")
@attrs.frozen
class FileReclaim:
    """Incoming iommufd: re-create its IOAS mappings from the retrieved memfds and have the
    kernel verify them against the preserved page tables and adopt them. Result: {token,
    reclaimed: true}."""

    session: str
    token: int


@METHODS.method("device.set")
@attrs.frozen
class DeviceSet:
    """A PCI device's state: interrupts on or off, power state. Result: the device."""

    bdf: str
    irq: bool | None = None
    power: Literal["D0", "D3hot"] | None = None


@METHODS.method("device.dma")
@attrs.frozen
class DeviceDma:
    """Start (or stop, with length 0) a device's DMA engine writing a verifiable pattern
    into [iova, iova + length) through the IOMMU. Result: the device."""

    bdf: str
    iova: int = 0
    length: int = 0
    seed: int = 0
    rate: int = 1_000_000


@METHODS.method("device.show")
@attrs.frozen
class DeviceShow:
    """Result: {bdf, power, irq, dma: {writes, faults, writes_during_blackout, ...}}."""

    bdf: str


# -- fault injection: admin requests, refused (luod.FaultsDisabled, EPERM) unless luod was
# started with --enable-faults; root or the daemon's own uid only. The points and what a
# fault at each does: `fault.list`, and luod/kernel_model/faults.py. ------------------------


@METHODS.method("fault.arm")
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


@METHODS.method("fault.list")
@attrs.frozen
class FaultList:
    """Result: {enabled, points: [{point, layer, after_kexec, description, consequence,
    armed: [arm]}], armed: [arm], fired: [{point, subject}] (the last 100)}."""


@METHODS.method("fault.clear")
@attrs.frozen
class FaultClear:
    """Disarm one point, or every point when `point` is null. Result: {cleared: N}."""

    point: str | None = None
