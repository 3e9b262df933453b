"""`luoctl events [--follow]`: daemon events as JSON lines.

Owns the line format: one JSON object per event, `{"event": NAME, "ts": SECONDS, ...data}`
(the event's data flattened in, as the daemon's own replay shapes it), flushed line by
line, with or without `--json` (the stream is for programs either way).

* `--follow`: `{"event": "subscribed", "ts": ..., "socket": PATH, ...subscribe result}`
  first, then every event until SIGINT, a closed stdout (both exit 0 quietly) or the
  daemon closing the connection (exit 1).
* Without `--follow`: the daemon's recent events if the subscribe result carries them
  (`recent`: a list), then whatever arrived while subscribing, and exit.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import Any

from luoctl.context import Context, Outcome
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import Event

__all__ = ["event_line", "events", "replayed_line"]


def event_line(event: Event) -> dict[str, Any]:
    """The printed object of a wire event: name and time first, then its data (whose own
    `event`/`ts` keys, if any, cannot override them)."""
    line: dict[str, Any] = {"event": event.event, "ts": event.ts}
    line.update((k, v) for k, v in event.data.items() if k not in line)
    return line


def replayed_line(item: object) -> object:
    """The printed object of a replayed event: `{event, ts, data}` is flattened like a wire
    event; anything else (already flat) is printed as the daemon sent it."""
    if (
        isinstance(item, Mapping)
        and isinstance(item.get("event"), str)
        and isinstance(item.get("data"), Mapping)
        and set(item) <= {"event", "ts", "data"}
    ):
        return event_line(Event(event=item["event"], ts=item.get("ts", 0.0), data=item["data"]))
    return item


def events(ctx: Context, args: argparse.Namespace) -> Outcome:
    reply = ctx.link.call("events.subscribe")
    close_fds(reply.fds)
    result: Mapping[str, Any] = reply.result if isinstance(reply.result, Mapping) else {}
    if not args.follow:
        recent = result.get("recent")
        for item in recent if isinstance(recent, list) else []:
            ctx.out.json_line(replayed_line(item))
        stream = ctx.link.events()
        # Only what is already buffered: next() would block once the buffer is empty.
        while ctx.link.buffered_events:
            ctx.out.json_line(event_line(next(stream)))
        return Outcome(silent=True)
    header = {k: v for k, v in result.items() if k not in ("event", "ts", "recent")}
    ctx.out.json_line({"event": "subscribed", "ts": time.time(), "socket": ctx.link.path, **header})
    try:
        for event in ctx.link.events():
            ctx.out.json_line(event_line(event))
    except KeyboardInterrupt:
        pass  # the normal way to stop following
    return Outcome(silent=True)
