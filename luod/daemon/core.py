"""Everything one luod process serves: the host, the event bus, the orchestrator, records.

`Daemon` is the state the method handlers act on, below the connections that reach it:
it knows its connections only as `Peer`s (what a kexec or a drop needs of them), so the
connection module sits above it. Access to the kernel model is serialised by trio itself:
the model is synchronous and every handler runs it without awaiting in between; the
orchestrator's lock keeps updates apart.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any, Protocol

import structlog
import trio

from luod import __version__
from luod.daemon.access import AdminPolicy
from luod.daemon.admission import Admission, ConnectionLimits
from luod.daemon.clock import DeviceClock
from luod.daemon.devliveupdate import UapiEndpoint
from luod.daemon.events import EventBus
from luod.daemon.host import Host
from luod.daemon.orchestrator import Orchestrator
from luod.daemon.owners import Caller
from luod.daemon.participants import Participant
from luod.daemon.records import RunRecords
from luod.kernel_model.faults import Fired

log = structlog.get_logger("luod.server")

# An events follower the bus has dropped gets this long to read up to its final
# `events.dropped` before the daemon closes its connection (it may not read at all).
DROP_GRACE_SECONDS = 5.0


class Peer(Protocol):
    """A client connection, as the daemon sees it."""

    id: int
    participant: Participant | None
    holds_files: bool  # created or retrieved sessions/files: dies with a kexec

    def drop(self, reason: str) -> None: ...


class Daemon:
    """Everything one luod process serves: the host, events, the orchestrator."""

    def __init__(
        self,
        host: Host,
        *,
        records: RunRecords | None = None,
        status_hook: Callable[[str], object] = lambda s: None,
        faults_enabled: bool = False,
        event_capacity: int = 1024,
        drop_grace: float = DROP_GRACE_SECONDS,
        policy: AdminPolicy | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.host = host
        self.policy = policy or AdminPolicy(os.getuid())
        self.bus = EventBus(capacity=event_capacity)
        self.faults_enabled = faults_enabled
        self.drop_grace = drop_grace
        self.nursery: trio.Nursery | None = None  # set by `serve`: daemon-wide tasks
        host.faults.on_fire = self._fault_fired
        self.clock = DeviceClock(host.machine)
        self.records = records or RunRecords(None)
        self.connections: dict[int, Peer] = {}
        self.ids = itertools.count(1)
        self.orchestrator = Orchestrator(
            host,
            self.bus,
            on_update_record=self.records.update_finished,
            on_kexec=self.userspace_dies,
            on_phase=self.record_phase,
            status_hook=status_hook,
            clock=self.clock,
        )
        if self.records.last_update is not None:
            self.orchestrator.last_update = self.records.last_update
        self.uapi = UapiEndpoint(host, self.orchestrator)  # luod-run's /dev/liveupdate
        self.orchestrator.before_freeze = self.uapi.live.sync
        # After the endpoint raised the fd limit, which the default total cap derives from.
        self.admission = Admission(limits or ConnectionLimits())

    def at_stake(self) -> list[dict[str, Any]]:
        """Every session and file a crash now would lose: {name, direction, owner,
        files: [{token, type}]}, for the run record."""
        return [
            {
                "name": s["name"],
                "direction": s["direction"],
                "owner": s["owner"],
                "files": [{"token": f["token"], "type": f["type"]} for f in s["files"]],
            }
            for s in self.host.sessions()
        ]

    def record_phase(
        self, phase: str | None, update_id: int | None, target: str | None, kind: str = "update"
    ) -> None:
        """Durably note the update phase now running (None: nothing is in flight)."""
        if phase is None:
            self.records.settled()
            return
        self.records.phase(
            phase,
            update_id=update_id,
            start_release=self.host.kernel.release,
            target=target,
            sessions=self.at_stake(),
            kind=kind,
        )

    def _fault_fired(self, fired: Fired) -> None:
        log.info("fault_fired", point=fired.point, subject=fired.subject)
        self.bus.publish("fault.fired", point=fired.point, subject=fired.subject)

    def drop_later(self, conn: Peer, reason: str) -> None:
        """End `conn` after the grace period unless it has ended by then."""

        async def drop() -> None:
            await trio.sleep(self.drop_grace)
            if self.connections.get(conn.id) is conn:
                conn.drop(reason)

        if self.nursery is not None:
            self.nursery.start_soon(drop)
        else:
            conn.drop(reason)

    def userspace_dies(self, keep: object = None) -> None:
        """A kexec or power cycle ends emulated userspace: participants and connections
        holding emulated files are dropped; `keep` (who asked) and control-only ones stay."""
        self.uapi.userspace_dies()
        for conn in list(self.connections.values()):
            if conn is keep:
                conn.holds_files = False
                continue
            if conn.participant is not None or conn.holds_files:
                conn.drop("kexec: userspace ends")

    def status(self, caller: Caller) -> dict[str, Any]:
        host = self.host
        kernel = host.kernel
        orch = self.orchestrator
        orch.refresh_damage()
        return {
            "state": kernel.state,
            "kernel": {
                "release": kernel.release,
                "liveupdate_number": kernel.liveupdate_number,
                "boot": {"kind": kernel.boot_report.kind, "reason": kernel.boot_report.reason},
                "panic": kernel.panicked,
            },
            "loaded": kernel.loaded.release if kernel.loaded is not None else None,
            "sessions": host.sessions(caller),
            "participants": [p.as_json() for p in orch.participants.values()],
            "blocking": orch.roster.blocking(),
            "last_update": orch.last_update,
            "last_cancel": orch.last_cancel,
            "machine": {
                "ram": host.machine.memory.size_bytes,
                "resident": host.machine.memory.resident_bytes(),
                "pci_devices": len(host.machine.pci),
            },
            "device_error": host.device_error,
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "connections": self.admission.as_json(),
                **self.records.status(),
            },
        }
