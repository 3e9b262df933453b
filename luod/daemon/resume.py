"""After the kexec: which participants the update still waits for, and when it is complete.

An update's record is written when the next kernel serves; its participants come back
later, one by one. Each one's resume time goes into the record; the last one completes the
full blackout (`full_blackout_ms`, `resumed`, the `update.resumed` event). Whoever has not
resumed by the update's deadline is reported `late` (and `participant.late`), and its
resume, whenever it comes, is still accepted and still completes the full blackout.

The times are the daemon's own (`perf_counter` from the start of freeze, trio time for
the deadline): only the record, which holds plain values, outlives a restart of luod.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from luod.daemon.events import EventBus
from luod.daemon.participants import Participant

Record = dict[str, Any]


class ResumeWatch:
    def __init__(self, bus: EventBus, on_record: Callable[[Record], None]) -> None:
        self.bus = bus
        self._on_record = on_record
        self.pending: set[str] = set()
        self._record: Record | None = None  # the update they belong to
        self._freeze_at: float | None = None
        self.by: float | None = None  # trio time by which participants resume

    def expect(
        self, record: Record, names: set[str], freeze_at: float, deadline: float
    ) -> float | None:
        """A new kernel serves `record`'s update: wait for `names`; returns the resume
        deadline, if any."""
        self._record = record
        self.pending = set(names)
        self._freeze_at = freeze_at
        self.by = trio.current_time() + deadline if names else None
        return self.by

    def arrived(self, record: Record | None, name: str) -> None:
        if name in self.pending and record is not None and self._freeze_at:
            record.setdefault("resume_ms", {})[name] = self._since_freeze()
            if self.by is not None and trio.current_time() > self.by:
                late = record.setdefault("late", [])
                if name not in late:
                    late.append(name)
            self._on_record(record)
        self.pending.discard(name)
        if (
            not self.pending
            and record is not None
            and self._freeze_at
            and record.get("full_blackout_ms") is None
        ):
            record["full_blackout_ms"] = self._since_freeze()
            record["resumed"] = True
            self._on_record(record)
            self.bus.publish(
                "update.resumed",
                update_id=record["update_id"],
                full_blackout_ms=record["full_blackout_ms"],
            )

    async def report_late(
        self, record: Record, participants: dict[str, Participant], by: float
    ) -> None:
        """At the resume deadline `by`, report in `record` every participant not back yet
        (unless a later update has started waiting since)."""
        await trio.sleep_until(by)
        if record is not self._record or not self.pending:
            return
        update_id = record["update_id"]
        for name in sorted(self.pending):
            if name not in record["late"]:
                record["late"].append(name)
            participant = participants.get(name)
            if participant is not None and participant.state == "resuming":
                participant.state = "late"
            self.bus.publish("participant.late", update_id=update_id, name=name)
        self._on_record(record)

    def _since_freeze(self) -> float:
        assert self._freeze_at is not None
        return round((time.perf_counter() - self._freeze_at) * 1000, 3)
