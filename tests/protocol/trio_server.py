"""A tiny trio luod stand-in built on `FramedStream`, as the daemon will be: hello via
`accept_hello`, one task per request (so replies come back out of order), a lock
serialising sends, and the test methods below.

Methods: `echo`, `sleep` {seconds, value} (replies after sleeping), `emit` {n} (n events,
then the reply), `readfd`, `makefd`, `hang` (never replies), `close` (hangs up), `whoami`
(the peer's credentials, Unix sockets only).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import trio

from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import CLOSED, Connection, error_reply
from luod.ipc.errors import ConnectionLost, ProtocolErrorName, RemoteProtocolError
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import Event, Message, Reply, Request
from luod.ipc.state import Role


async def serve_connection(
    stream: trio.abc.Stream, *, supported_versions: frozenset[int] = frozenset({1})
) -> None:
    framed = FramedStream(stream, Connection(Role.SERVER, supported_versions=supported_versions))
    send_lock = trio.Lock()

    async def send(message: Message) -> None:
        async with send_lock:
            await framed.send(message)

    async def handle(request: Request, hang_up: trio.CancelScope) -> None:
        params = request.params
        try:
            if request.method == "echo":
                await send(Reply(id=request.id, result=params))
            elif request.method == "sleep":
                await trio.sleep(params["seconds"])
                await send(Reply(id=request.id, result=params["value"]))
            elif request.method == "emit":
                for i in range(params["n"]):
                    await send(Event(event="tick", ts=trio.current_time(), data={"i": i}))
                await send(Reply(id=request.id, result="emitted"))
            elif request.method == "readfd":
                await send(
                    Reply(id=request.id, result=[os.pread(fd, 100, 0) for fd in request.fds])
                )
            elif request.method == "makefd":
                fd = os.memfd_create("trio-reply")
                os.write(fd, b"from trio")
                try:
                    await send(Reply(id=request.id, result=None, fds=[fd]))
                finally:
                    os.close(fd)
            elif request.method == "whoami":
                creds = framed.peer_credentials()
                await send(Reply(id=request.id, result=[creds.pid, creds.uid, creds.gid]))
            elif request.method == "hang":
                await trio.sleep_forever()
            elif request.method == "close":
                hang_up.cancel()
            else:
                exc = RemoteProtocolError(
                    ProtocolErrorName.UNKNOWN_METHOD, "unknown method", object=request.method
                )
                await send(error_reply(exc, request.id))
        finally:
            close_fds(request.fds)

    try:
        await framed.accept_hello("trio-luod")
        async with trio.open_nursery() as nursery:
            while True:
                event = await framed.receive()
                if event is CLOSED:
                    break
                assert isinstance(event, Request)
                nursery.start_soon(handle, event, nursery.cancel_scope)
            nursery.cancel_scope.cancel()
    except (RemoteProtocolError, ConnectionLost, trio.BrokenResourceError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await framed.aclose()


async def serve_unix(
    path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on `path` and serve every connection (until cancelled)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(8)
    listener = trio.SocketListener(sock)
    async with listener:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(serve_connection, stream)
