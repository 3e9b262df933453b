"""The trio service: accept connections and run each one against the daemon.

`serve(daemon, listener, task_status=...)` is what `nursery.start` waits for: it reports
started once the listener accepts. Accepting and the connection caps are
`luod.daemon.admission`'s: a connection over a cap gets its error frame and is closed
here. Each admitted stream becomes a `ClientConnection` whose requests go through the one
`Dispatcher` (built here, at start-up, from the method groups of `luod.daemon.api`, and
checked against the method table then). The peer's
uid/pid come from SO_PEERCRED. When a connection ends, the orchestrator learns of it (a
participant that vanishes during an update cancels it) and its event subscription ends.
"""

from __future__ import annotations

import contextlib
import os

import structlog
import trio

from luod.daemon.admission import accept_loop
from luod.daemon.api import GROUPS
from luod.daemon.connection import ClientConnection
from luod.daemon.core import Daemon
from luod.daemon.dispatch import Dispatcher
from luod.daemon.errors import error_reply
from luod.daemon.owners import Caller
from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import Connection
from luod.ipc.state import Role

log = structlog.get_logger("luod.server")

REFUSAL_SECONDS = 1.0  # for the refusal's error frame; a fresh socket takes it at once
REFUSAL_READ = 4096


async def handle_stream(daemon: Daemon, dispatch: Dispatcher, stream: trio.SocketStream) -> None:
    """Run one client connection until it ends."""
    framed = FramedStream(stream, Connection(Role.SERVER))
    try:
        creds = framed.peer_credentials()
        caller = Caller(uid=creds.uid, pid=creds.pid, gid=creds.gid)
    except (RuntimeError, OSError):
        caller = Caller(uid=os.getuid())
    refusal = daemon.admission.admit(caller.uid)
    if refusal is not None:
        log.info("connection_refused", peer_uid=caller.uid, reason=refusal.message)
        with trio.move_on_after(REFUSAL_SECONDS):
            await framed.send_error_and_forget(error_reply(None, refusal))
            # Take the client's hello (until it closes, having read the refusal): a Unix
            # socket closed with unread bytes resets its peer, which could then miss it.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await stream.receive_some(REFUSAL_READ):
                    pass
        with trio.CancelScope(shield=True):
            await framed.aclose()
        return
    try:
        await _serve_admitted(daemon, dispatch, framed, caller)
    finally:
        daemon.admission.release(caller.uid)


async def _serve_admitted(
    daemon: Daemon, dispatch: Dispatcher, framed: FramedStream, caller: Caller
) -> None:
    conn = ClientConnection(daemon, framed, caller, next(daemon.ids), dispatch)
    daemon.connections[conn.id] = conn
    with structlog.contextvars.bound_contextvars(
        conn=conn.id, peer_uid=caller.uid, peer_pid=caller.pid
    ):
        log.debug("connection_open")
        try:
            await conn.run()
        finally:
            daemon.connections.pop(conn.id, None)
            daemon.orchestrator.roster.disconnected(conn)
            if conn.subscriber is not None:
                conn.subscriber.close()
            with trio.CancelScope(shield=True):
                await framed.aclose()
            log.debug("connection_closed", requests=conn.requests)


async def serve(
    daemon: Daemon,
    listener: trio.SocketListener,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections until cancelled."""
    dispatch = Dispatcher(GROUPS)

    async def handle(stream: trio.SocketStream) -> None:
        await handle_stream(daemon, dispatch, stream)

    async with trio.open_nursery() as nursery:
        daemon.nursery = daemon.orchestrator.nursery = daemon.uapi.nursery = nursery
        nursery.start_soon(daemon.clock.run)
        task_status.started()
        await accept_loop(listener, nursery, handle, daemon.admission)
