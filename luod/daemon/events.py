"""Daemon events: one bus, bounded per subscriber, and a short replay history.

`publish` never blocks the daemon: each subscriber has a bounded queue, and a subscriber
that falls `capacity` events behind is dropped. It receives one final event,
`events.dropped`, and its queue closes (its connection then ends). The last `history`
events are kept for `events` without `--follow`.

`capacity` is the bus's (the daemon's `event_capacity`); a subscriber's `on_drop` is told
when it is dropped, so its owner can end a connection that does not even read that far.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import AsyncIterator, Callable
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
    def __init__(
        self, bus: EventBus, capacity: int, on_drop: Callable[[], None] | None = None
    ) -> None:
        self.id = next(bus._ids)
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[DaemonEvent](capacity + 1)
        self._capacity = capacity
        self._on_drop = on_drop
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
            if self._on_drop is not None:
                self._on_drop()
            return
        self._send.send_nowait(event)

    def __aiter__(self) -> AsyncIterator[DaemonEvent]:
        # The channel itself, not an async generator: a follower cancelled in the middle
        # of its loop (its connection dropped) leaves no generator to finalize.
        return self._receive

    def close(self) -> None:
        self._send.close()
        self._bus._subscribers.pop(self.id, None)


class EventBus:
    def __init__(self, *, capacity: int = 1024, history: int = 200) -> None:
        self.capacity = capacity
        self._subscribers: dict[int, Subscriber] = {}
        self._history: collections.deque[DaemonEvent] = collections.deque(maxlen=history)
        self._ids = itertools.count(1)

    def subscribe(
        self, capacity: int | None = None, *, on_drop: Callable[[], None] | None = None
    ) -> Subscriber:
        sub = Subscriber(self, capacity or self.capacity, on_drop)
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
