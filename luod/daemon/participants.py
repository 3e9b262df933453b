"""Participants and the barrier: who takes part in updates, and waiting for their answers.

Participants are long-lived clients that register with a name and the sessions they care
about. For each phase that needs them (prepare, freeze) the daemon sends every connected
participant an event carrying the `update_id` and waits for each `participant.ack` within
the deadline. A NAK, a missed deadline or a disconnect fails the barrier with an error
naming the participant and the cause; the orchestrator then cancels the whole update.
`blocking` says who the running barrier still waits for (`status`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from luod.daemon.errors import DaemonError
from luod.daemon.events import EventBus
from luod.daemon.owners import Caller


class Member(Protocol):
    """The connection a participant speaks through (the daemon's client connection)."""

    caller: Caller
    participant: Participant | None

    def send_event_nowait(self, name: str, **data: Any) -> None: ...


@attrs.define(eq=False)
class Participant:
    name: str
    uid: int
    sessions: list[str]
    conn: Member | None
    state: str = "registered"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "sessions": self.sessions, "state": self.state}


@attrs.define(eq=False)
class Barrier:
    """One phase of one update waiting for every participant's answer."""

    update_id: int
    phase: str
    waiting: set[str]
    done: trio.Event = attrs.field(factory=trio.Event)
    failure: DaemonError | None = None

    def answer(self, name: str, ok: bool, reason: str | None) -> None:
        if name not in self.waiting:
            return
        self.waiting.discard(name)
        if not ok and self.failure is None:
            self.failure = DaemonError(
                "ParticipantRefused",
                f"participant {name!r} refused {self.phase}: {reason or 'no reason given'}",
                errno=errno.ECANCELED,
                obj=name,
            )
        if self.failure is not None or not self.waiting:
            self.done.set()

    def lost(self, name: str) -> None:
        if name in self.waiting and self.failure is None:
            self.failure = DaemonError(
                "ParticipantGone",
                f"participant {name!r} disconnected during {self.phase}",
                errno=errno.ECONNRESET,
                obj=name,
            )
            self.done.set()


class Roster:
    """The registered participants by name, and the barrier running now (if any)."""

    def __init__(self, bus: EventBus, status_hook: Callable[[str], object]) -> None:
        self.bus = bus
        self.participants: dict[str, Participant] = {}
        self.barrier: Barrier | None = None
        self._status = status_hook

    def register(self, conn: Member, name: str, sessions: list[str]) -> Participant:
        if not name:
            raise DaemonError("BadParticipant", "participant name is empty", errno=errno.EINVAL)
        known = self.participants.get(name)
        if known is not None and known.conn is not None and known.conn is not conn:
            raise DaemonError(
                "ParticipantExists",
                f"participant {name!r} is registered on another connection",
                errno=errno.EEXIST,
                obj=name,
            )
        if self.barrier is not None:
            raise DaemonError(
                "UpdateInProgress",
                f"cannot register {name!r} while an update waits for {self.barrier.phase}",
                errno=errno.EBUSY,
                obj=name,
            )
        participant = Participant(name, conn.caller.uid, sessions, conn)
        self.participants[name] = participant
        self.bus.publish("participant.registered", name=name, sessions=sessions)
        return participant

    def ready(self, participant: Participant) -> None:
        participant.state = "ready"
        self.bus.publish("participant.ready", name=participant.name)

    def adopt(self, conn: Member, name: str) -> Participant:
        """After a kexec: the connection reporting as `name` now stands for it (so its
        disconnect is noticed and a later barrier does not wait on a ghost); another
        uid's report makes a new participant."""
        participant = self.participants.get(name)
        if participant is None or (participant.uid != conn.caller.uid and not conn.caller.root):
            participant = Participant(name, conn.caller.uid, [], conn)
            self.participants[name] = participant
        participant.conn = conn
        conn.participant = participant
        participant.state = "resumed"
        self.bus.publish("participant.resumed", name=name)
        return participant

    def ack(self, conn: Member, update_id: int, phase: str, ok: bool, reason: str | None) -> None:
        participant = conn.participant
        if participant is None:
            raise DaemonError(
                "NotAParticipant", "register before acknowledging", errno=errno.EINVAL
            )
        barrier = self.barrier
        if barrier is None or barrier.update_id != update_id or barrier.phase != phase:
            raise DaemonError(
                "NoSuchBarrier",
                f"no {phase} of update {update_id} is waiting",
                errno=errno.ENOENT,
                obj=participant.name,
            )
        participant.state = f"{phase}d" if ok else f"refused {phase}"
        barrier.answer(participant.name, ok, reason)
        if not barrier.done.is_set():
            self._publish_waiting(barrier)

    def disconnected(self, conn: Member) -> None:
        participant = conn.participant
        if participant is None or self.participants.get(participant.name) is not participant:
            return
        participant.conn = None
        if self.barrier is not None:
            self.barrier.lost(participant.name)
        if participant.state not in ("resuming", "late"):
            del self.participants[participant.name]
            self.bus.publish("participant.gone", name=participant.name)

    def blocking(self) -> list[dict[str, Any]]:
        if self.barrier is None:
            return []
        return [
            {"name": n, "waiting_for": self.barrier.phase} for n in sorted(self.barrier.waiting)
        ]

    def connected(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.conn is not None]

    def tell(self, event: str, **data: Any) -> None:
        """Send `event` to every connected participant."""
        for p in self.connected():
            assert p.conn is not None
            p.conn.send_event_nowait(event, **data)

    def _publish_waiting(self, barrier: Barrier) -> None:
        """Who the update waits for now: what `luoctl update` shows a person watching."""
        self.bus.publish(
            "update.waiting",
            update_id=barrier.update_id,
            phase=barrier.phase,
            participants=sorted(barrier.waiting),
        )

    async def wait_for_all(self, update_id: int, phase: str, deadline: float) -> None:
        """Send `phase` to every connected participant and wait for all their acks."""
        active = self.connected()
        if not active:
            return
        barrier = Barrier(update_id, phase, {p.name for p in active})
        self.barrier = barrier
        self._status(f"waiting for {len(active)} participant(s) to {phase}")
        self._publish_waiting(barrier)
        try:
            for p in active:
                p.state = f"{phase} requested"
                assert p.conn is not None
                p.conn.send_event_nowait(phase, update_id=update_id, phase=phase, deadline=deadline)
            with trio.move_on_after(deadline):
                await barrier.done.wait()
        finally:
            self.barrier = None
        if barrier.failure is not None:
            raise barrier.failure
        if barrier.waiting:
            names = ", ".join(sorted(barrier.waiting))
            raise DaemonError(
                "ParticipantTimeout",
                f"participant(s) {names} did not acknowledge {phase} within {deadline:g} s",
                errno=errno.ETIMEDOUT,
                obj=names,
            )
