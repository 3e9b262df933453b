"""Daemon events: one bus, bounded per subscriber, and a short replay history.

`publish` never blocks the daemon: each subscriber has a bounded queue, and a subscriber
that falls `capacity` events behind is dropped. It receives one final event,
`events.dropped`, and its queue closes (its connection then ends). The last `history`
events are kept for `events` without `--follow`.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

DROPPED = "events.dropped"


@attrs.frozen
class DaemonEvent:
    event: str
    ts: float
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"event": self.event, "ts": self.ts, **self.data}


class Subscriber:
    def __init__(self, bus: EventBus, capacity: int) -> None:
        self.id = next(bus._ids)
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[DaemonEvent](capacity + 1)
        self._capacity = capacity
        self.dropped = False

    def _offer(self, event: DaemonEvent) -> None:
        if self.dropped:
            return
        if self._send.statistics().current_buffer_used >= self._capacity:
            # Too far behind: one last event (the +1 slot is reserved for it), then close.
            self.dropped = True
            self._send.send_nowait(
                DaemonEvent(
                    DROPPED, time.time(), {"reason": f"more than {self._capacity} events behind"}
                )
            )
            self._send.close()
            self._bus._subscribers.pop(self.id, None)
            return
        self._send.send_nowait(event)

    async def __aiter__(self) -> AsyncIterator[DaemonEvent]:
        async with self._receive:
            async for event in self._receive:
                yield event

    def close(self) -> None:
        self._send.close()
        self._bus._subscribers.pop(self.id, None)


class EventBus:
    def __init__(self, *, capacity: int = 1024, history: int = 200) -> None:
        self.capacity = capacity
        self._subscribers: dict[int, Subscriber] = {}
        self._history: collections.deque[DaemonEvent] = collections.deque(maxlen=history)
        self._ids = itertools.count(1)

    def subscribe(self, capacity: int | None = None) -> Subscriber:
        sub = Subscriber(self, capacity or self.capacity)
        self._subscribers[sub.id] = sub
        return sub

    def publish(self, event_name: str, /, **data: Any) -> DaemonEvent:
        event = DaemonEvent(event_name, time.time(), data)
        self._history.append(event)
        for sub in list(self._subscribers.values()):
            sub._offer(event)
        return event

    def recent(self) -> list[DaemonEvent]:
        return list(self._history)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
