"""Files in sessions: memfds copied in and out (the bridge is `luod.daemon.memfd_bridge`),
unpreserve, retrieve and reclaim of any file, and the objects and plans a VMM builds
before preserving them in dependency order.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import trio

from luod.daemon import memfd_bridge
from luod.daemon.connection import ClientConnection
from luod.daemon.dispatch import MethodGroup, Result
from luod.ipc import methods as m
from luod.ipc.messages import Request

group = MethodGroup("files")

PROGRESS_INTERVAL = 0.2  # seconds between `memfd.progress` events


@group("memfd.preserve")
async def _memfd_preserve(c: ClientConnection, p: m.MemfdPreserve, r: Request) -> Result:
    c.holds_files = True
    host = c.daemon.host
    steps = host.memfd_from_fd(
        c.caller,
        p.session,
        p.token,
        r.fds[0],
        size=p.size,
        seals=p.seals,
        name=p.name,
        page_size=p.page_size,
    )
    if p.progress:
        result = await _copy_reporting(c, steps, p.session, p.token)
    else:  # in one go: nobody else runs while the copy does
        result = memfd_bridge.run_steps(steps)
    c.daemon.bus.publish("file.preserved", session=p.session, token=p.token, type=result["type"])
    return result, []


@group("memfd.retrieve")
async def _memfd_retrieve(c: ClientConnection, p: m.MemfdRetrieve, r: Request) -> Result:
    c.holds_files = True
    info, fd = c.daemon.host.memfd_to_fd(c.caller, p.session, p.token)
    return info, [fd]


@group("file.unpreserve")
async def _file_unpreserve(c: ClientConnection, p: m.FileUnpreserve, r: Request) -> Result:
    c.daemon.host.file_unpreserve(c.caller, p.session, p.token)
    c.daemon.bus.publish("file.unpreserved", session=p.session, token=p.token)
    return {}, []


@group("file.retrieve")
async def _file_retrieve(c: ClientConnection, p: m.FileRetrieve, r: Request) -> Result:
    c.holds_files = True
    return c.daemon.host.file_retrieve(c.caller, p.session, p.token), []


@group("file.reclaim")
async def _file_reclaim(c: ClientConnection, p: m.FileReclaim, r: Request) -> Result:
    result = c.daemon.host.file_reclaim(c.caller, p.session, p.token)
    c.daemon.bus.publish("file.reclaimed", session=p.session, token=p.token)
    return result, []


@group("object.create")
async def _object_create(c: ClientConnection, p: m.ObjectCreate, r: Request) -> Result:
    c.holds_files = True
    return c.daemon.host.object_create(c.caller, p.object, r.fds[0] if r.fds else None), []


@group("object.preserve")
async def _object_preserve(c: ClientConnection, p: m.ObjectPreserve, r: Request) -> Result:
    result = c.daemon.host.object_preserve(c.caller, p.session, p.token, p.name)
    c.daemon.bus.publish("file.preserved", **result)
    return result, []


@group("object.list")
async def _object_list(c: ClientConnection, p: m.ObjectList, r: Request) -> Result:
    objects = c.daemon.host.objects.of(c.caller.uid)
    return {"objects": [o.as_json() for o in objects]}, []


@group("object.close")
async def _object_close(c: ClientConnection, p: m.ObjectClose, r: Request) -> Result:
    c.daemon.host.object_close(c.caller, p.name)
    return {}, []


@group("apply")
async def _apply(c: ClientConnection, p: m.Apply, r: Request) -> Result:
    c.holds_files = True
    result = c.daemon.host.apply(c.caller, p.plan)
    c.daemon.bus.publish("plan.applied", sessions=[s["name"] for s in result["sessions"]])
    return result, []


async def _copy_reporting(
    c: ClientConnection,
    steps: Generator[tuple[int, int], None, dict[str, Any]],
    session: str,
    token: int,
) -> dict[str, Any]:
    """Run a chunked copy, telling the caller how far it is at most every
    PROGRESS_INTERVAL seconds and once at the end (so the last event before the reply
    says `copied == total`), letting other clients in between chunks."""
    shown = -PROGRESS_INTERVAL
    try:
        while True:
            try:
                copied, total = next(steps)
            except StopIteration as done:
                result: dict[str, Any] = done.value
                return result
            now = trio.current_time()
            if now - shown >= PROGRESS_INTERVAL or copied == total:
                shown = now
                c.send_event_nowait(
                    "memfd.progress", session=session, token=token, copied=copied, total=total
                )
            await trio.sleep(0)
    finally:
        steps.close()  # cancelled mid-copy: the half-made memfd is released
