"""The update choreography: the phases of an update, its record, and what comes after it.

Participants (`luod.daemon.participants`) get `prepare` and then `freeze` events and must
acknowledge each; a NAK, a missed deadline or a disconnect cancels the whole update: the
kernel goes back to NORMAL and every object is usable again; the error names the
participant and the cause.

`update` runs the phases `load`, `check`, `prepare`, `freeze`, `kexec`, `restore` and times
each. The blackout runs from the start of freeze until the next kernel serves retrieval (its
LUO device is open). After the kexec, participants reconnect, retrieve and report
`participant.resumed`; `luod.daemon.resume` completes the record as they come back.
A kexec ends userspace: connections that are participants or hold emulated files are
dropped; control-only connections stay and receive the result.

Failure semantics. The kexec is the point of no return. Any failure before it (a fault
point, a NAK, a timeout, a vanished participant) cancels the update automatically: the
kernel is back to NORMAL with every object preserved and usable, the request's error is the
first cause, and `last_cancel` keeps it with whatever the rollback complained about. A
failure after it cannot be undone, so it is reported: the update's record lists, per
session and per file, what the next kernel could not restore (`damage`: lost in a cold
boot or a panic, unusable behind a broken LUO device, owner unknown, a failed retrieve or
finish), while every other session goes on. A participant has the update's deadline to
resume after the kexec; one that misses it is reported (`late`, `participant.late`), and
its resume, whenever it comes, is still accepted and completes the full blackout.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio

from luod.daemon import compat, devices, heap
from luod.daemon.clock import DeviceClock
from luod.daemon.damage import boot_damage
from luod.daemon.errors import DaemonError, error_json, incompatible
from luod.daemon.events import EventBus
from luod.daemon.host import Host
from luod.daemon.participants import Member, Participant, Roster
from luod.daemon.resume import ResumeWatch
from luod.kernel_model.images import KernelImage
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.luo.incoming import Damage
from luod.kernel_model.luo.state import LuoState

log = structlog.get_logger("luod.orchestrator")

PHASES = ("load", "check", "prepare", "freeze", "kexec", "restore")
DEFAULT_DEADLINE = 30.0


class Orchestrator:
    def __init__(
        self,
        host: Host,
        bus: EventBus,
        *,
        on_update_record: Callable[[dict[str, Any]], None] = lambda r: None,
        on_kexec: Callable[[object], None] = lambda keep: None,
        on_phase: Callable[[str | None, int | None, str | None], None] = lambda *a: None,
        status_hook: Callable[[str], object] = lambda s: None,
        clock: DeviceClock | None = None,
    ) -> None:
        self.host = host
        self.clock = clock or DeviceClock(host.machine)
        self.bus = bus
        self.roster = Roster(bus, status_hook)
        self.lock = trio.Lock()
        self.last_update: dict[str, Any] | None = None
        self.ids = itertools.count(1)
        self._on_record = on_update_record
        self._on_kexec = on_kexec
        self.mark = on_phase  # (phase, update_id, target): the run record; None: settled
        self.before_freeze: Callable[[], None] = lambda: None  # luod-run's live memfds
        self._status = status_hook
        self.resume = ResumeWatch(bus, on_update_record)
        self._requester: object = None
        self._dma_at_freeze: dict[str, int] = {}
        self._collection_pause = heap.CollectionPause()
        self.last_cancel: dict[str, Any] | None = None
        self.nursery: trio.Nursery | None = None  # the daemon's: runs the resume watch
        self._boot_damage: list[dict[str, Any]] = []
        self._kernel_damage_list: list[Damage] = []  # that kernel's, as it grows
        self._own_record: dict[str, Any] | None = None  # the last record this process made

    # -- participants ---------------------------------------------------------------------

    @property
    def participants(self) -> dict[str, Participant]:
        return self.roster.participants

    def resumed(self, conn: Member, name: str) -> Participant:
        """A participant is back after the kexec (see `luod.daemon.resume`)."""
        participant = self.roster.adopt(conn, name)
        self.resume.arrived(self.last_update, name)
        return participant

    # -- the update -----------------------------------------------------------------------

    def _cancel_quietly(self, update_id: int | None = None) -> list[dict[str, Any]]:
        """Back to NORMAL; returns what the rollback complained about (it never stops)."""
        kernel = self.host.kernel
        rollback: list[dict[str, Any]] = []
        luo = kernel.luo
        if luo is not None and luo.state in (LuoState.PREPARED, LuoState.FROZEN):
            kernel.cancel()
        if luo is not None:
            rollback = [error_json(e) for e in luo.rollback_errors]
            luo.rollback_errors = []
        for p in self.roster.connected():
            p.state = "ready"
        self.roster.tell("cancel", update_id=update_id, reason="update cancelled")
        return rollback

    def cancelled(self, update_id: int, target: str, exc: BaseException) -> None:
        """Cancel after a failure before the kexec, and keep the first cause."""
        rollback = self._cancel_quietly(update_id)
        self.mark(None, update_id, target)
        if not isinstance(exc, Exception):
            return  # the daemon is being cancelled itself: nothing to report
        error = error_json(exc)
        self.last_cancel = {
            "update_id": update_id,
            "target": target,
            "error": error,
            "rollback": rollback,
            "state": self.host.kernel.state,
            "at": time.time(),
        }
        log.info("update_cancelled", update_id=update_id, error=error["message"])
        self.bus.publish(
            "update.cancelled",
            update_id=update_id,
            reason=error["message"],
            error=error,
            rollback=rollback,
        )

    def _hit(self, point: str, target: str) -> None:
        self.host.faults.hit(point, target)

    async def update(
        self, target: str, *, timeout: float | None, force: bool, requester: object = None
    ) -> dict[str, Any]:
        """`requester` (the asking connection) survives the kexec to receive the result."""
        if self.lock.locked():
            raise DaemonError("UpdateInProgress", "another update is running", errno=errno.EBUSY)
        async with self.lock:
            self._requester = requester
            return await self._update(target, timeout or DEFAULT_DEADLINE, force)

    async def _update(self, target: str, deadline: float, force: bool) -> dict[str, Any]:
        host = self.host
        update_id = next(self.ids)
        phases: dict[str, float] = {}
        start_release = host.kernel.release
        self.bus.publish("update.started", update_id=update_id, target=target)

        def phase_done(name: str, started: float) -> None:
            phases[name] = round((time.perf_counter() - started) * 1000, 3)
            self.bus.publish("update.phase", update_id=update_id, phase=name, ms=phases[name])

        t = time.perf_counter()
        self._status(f"update {update_id}: load {target}")
        previous_loaded = host.kernel.loaded
        try:
            self.mark("load", update_id, target)
            self._hit("update.load", target)
            image = host.image(target)
            host.kernel.load(image)
            phase_done("load", t)
            t = time.perf_counter()
            self.mark("check", update_id, image.release)
            self._hit("update.check", image.release)
            report = compat.check(host.kernel, image)
            phase_done("check", t)
            if not report["compatible"] and not force:
                raise compat.refusal(report)
        except BaseException as exc:
            # Nothing was prepared: staging the image was the only change.
            host.kernel.loaded = previous_loaded
            self.cancelled(update_id, target, exc)
            raise
        try:
            t = time.perf_counter()
            self._status(f"update {update_id}: prepare")
            self.mark("prepare", update_id, image.release)
            host.prepare()
            self._hit("update.prepare-barrier", image.release)
            await self.roster.wait_for_all(update_id, "prepare", deadline)
            phase_done("prepare", t)
            self._blackout_begins()
            self._dma_at_freeze = self.clock.writes()
            t = freeze_at = time.perf_counter()
            self._status(f"update {update_id}: freeze")
            self.mark("freeze", update_id, image.release)
            self._hit("update.freeze-barrier", image.release)
            await self.roster.wait_for_all(update_id, "freeze", deadline)
            self.before_freeze()
            host.kernel.freeze()
            phase_done("freeze", t)
        except BaseException as exc:
            self._blackout_ends()
            self.cancelled(update_id, image.release, exc)
            raise
        return await self._kexec(update_id, phases, start_release, freeze_at, image, deadline)

    def _blackout_begins(self) -> None:
        """No device emulation (luod.daemon.clock) and no automatic garbage collection
        (luod.daemon.heap) inside the blackout: both are the daemon's cost, not the guest's."""
        self._collection_pause.begin()
        self.clock.defer()

    def _blackout_ends(self, until_ns: int | None = None) -> None:
        self.clock.resume(until_ns)
        self._collection_pause.end()

    def _kernel_damage(self) -> list[dict[str, Any]]:
        return [d.as_json() for d in self._kernel_damage_list]

    def refresh_damage(self) -> None:
        """Bring the last update's `damage` up to date with what retrieve and finish have
        found since (a failure there is recorded in the kernel as it happens)."""
        record = self.last_update
        if record is None or record is not self._own_record:
            return  # none yet, or a previous daemon's (history: left as it was)
        damage = self._boot_damage + self._kernel_damage()
        if damage != record["damage"]:
            record["damage"] = damage
            self._on_record(record)

    async def kexec(
        self, target: str | None, *, force: bool, requester: object = None
    ) -> dict[str, Any]:
        """The manual path: from FROZEN (after `prepare` and `freeze`)."""
        if self.lock.locked():
            raise DaemonError("UpdateInProgress", "another update is running", errno=errno.EBUSY)
        async with self.lock:
            self._requester = requester
            kernel = self.host.kernel
            luo = kernel.liveupdate()
            if luo.state is not LuoState.FROZEN:
                raise DaemonError(
                    "NotFrozen",
                    f"kexec needs state frozen, not {luo.state.value} (run prepare and freeze)",
                    errno=errno.EINVAL,
                )
            image = self.host.image(target) if target else luo.target
            assert image is not None
            if image is not luo.target:
                unreadable = sorted(c for c in luo.formats.values() if c not in image.reads)
                if unreadable and not force:
                    raise incompatible(
                        f"{image.release} cannot read {', '.join(unreadable)} "
                        "(prepared for another kernel; use --force to see what happens)",
                        image.release,
                    )
                luo.target = image
            update_id = next(self.ids)
            return await self._kexec(
                update_id, {}, kernel.release, time.perf_counter(), image, DEFAULT_DEADLINE
            )

    async def _kexec(
        self,
        update_id: int,
        phases: dict[str, float],
        start_release: str,
        freeze_at: float,
        image: KernelImage,
        deadline: float,
    ) -> dict[str, Any]:
        host = self.host
        try:
            self.mark("kexec", update_id, image.release)
            self._hit("update.kexec-start", image.release)
        except BaseException as exc:
            self._blackout_ends()
            self.cancelled(update_id, image.release, exc)
            raise
        # The point of no return: from here on, failures are reported, not rolled back.
        handed_over = sorted(host.luo.outgoing)
        self._status(f"update {update_id}: kexec into {image.release}")
        self.bus.publish("kexec", update_id=update_id, target=image.release)
        # queued before the drop, which flushes it
        self.roster.tell("kexec", update_id=update_id, target=image.release)
        resuming = {p.name: p.uid for p in self.participants.values()}
        if not self.clock.deferred:  # the manual path: the blackout starts with this call
            self._blackout_begins()
        if not self._dma_at_freeze:
            self._dma_at_freeze = self.clock.writes()
        # Unless the kexec changes nothing the running engines do, what they wrote until
        # now lands before userspace dies (which may unbind a device) and the next kernel
        # releases memory (which may take their tables or targets).
        if not devices.carried_through_kexec(host.kernel):
            self.clock.catch_up()
        ended_ns: int | None = None  # the blackout's end on the devices' clock
        try:
            self._on_kexec(self._requester)  # userspace dies: participants, fd holders
            await trio.lowlevel.checkpoint()
            t = time.perf_counter()
            new: Kernel = host.kernel.kexec()
            phases["kexec"] = round((time.perf_counter() - t) * 1000, 3)
            t = time.perf_counter()
            host.adopt(new)
            ended = time.perf_counter()
            ended_ns = self.clock.now_ns()
            phases["restore"] = round((ended - t) * 1000, 3)
        finally:
            self._blackout_ends(ended_ns)
        dma = self.clock.writes_since(self._dma_at_freeze)
        self._dma_at_freeze = {}
        resumers = [Participant(n, uid, [], None, state="resuming") for n, uid in resuming.items()]
        return self.booted(
            update_id,
            phases,
            start_release,
            freeze_at,
            handed_over,
            resumers,
            dma,
            deadline,
            ended_at=ended,
        )

    def booted(
        self,
        update_id: int,
        phases: dict[str, float],
        start_release: str,
        freeze_at: float,
        handed_over: list[str],
        resuming: list[Participant],
        dma: dict[str, int],
        deadline: float = DEFAULT_DEADLINE,
        ended_at: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The next kernel serves (after a kexec, or in a restarted luod): the update's
        record, what it lost, and the participants it waits for (`resuming`)."""
        host = self.host
        new = host.kernel
        # The blackout ended when the next kernel served (`ended_at`, default now); what
        # the devices wrote meanwhile is emulated after that, outside it (the clock).
        blackout = round(((ended_at or time.perf_counter()) - freeze_at) * 1000, 3)
        for participant in resuming:
            self.participants[participant.name] = participant
        # The new kernel's own list: it grows as retrieve and finish find damage (holding
        # the list, not the kernel, so a later cold boot's garbage is not kept alive).
        self._kernel_damage_list = new.luo.damage if new.luo is not None else []
        self._boot_damage = boot_damage(host, handed_over)
        record = {
            "update_id": update_id,
            **extra,
            "from": start_release,
            "to": new.release,
            "phases": phases,
            "blackout_ms": blackout,
            "full_blackout_ms": None if resuming else blackout,
            "resumed": not resuming,
            "boot": {"kind": new.boot_report.kind, "reason": new.boot_report.reason},
            "dma_writes_during_blackout": dma,
            "state": new.state,
            "finished_at": time.time(),
            "damage": self._boot_damage + self._kernel_damage(),
            "late": [],
        }
        if host.device_error:
            record["device_error"] = host.device_error
        self.last_update = self._own_record = record
        by = self.resume.expect(record, {p.name for p in resuming}, freeze_at, deadline)
        if by is not None and self.nursery is not None:
            self.nursery.start_soon(self.resume.report_late, record, self.participants, by)
        self._on_record(record)
        self.bus.publish("update.done", **record)
        self._status(f"running {new.release} ({new.state})")
        heap.after_kexec()  # the old kernel is garbage now (see luod.daemon.heap)
        return dict(record)
