"""What a connection sends goes out in the order it was made, whichever task sends it: an
event queued for the writer before a request's reply reaches the client before that reply,
although a reply normally leaves inline, without the writer (`luod.daemon.connection`).
Read frame by frame off a real socket, since the client library sorts events from
replies; the other replies (with nothing queued before them) still arrive."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import trio
import trio.testing

from luod.daemon.connection import ClientConnection, Dispatch
from luod.daemon.core import Daemon
from luod.daemon.owners import Caller
from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import Connection
from luod.ipc.fdpass import fds_ancillary
from luod.ipc.messages import ErrorReply, Reply, Request
from luod.ipc.state import Role

from .conftest import Running


class RawPeer:
    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buf = b""

    async def send(self, item: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        body = cbor2.dumps(item)
        await self.sock.sendmsg([struct.pack(">I", len(body)) + body], fds_ancillary(fds))

    async def frame(self) -> dict[str, Any]:
        while len(self.buf) < 4 or len(self.buf) < 4 + int.from_bytes(self.buf[:4]):
            more = await self.sock.recv(65536)
            assert more, "luod closed the connection"
            self.buf += more
        length = int.from_bytes(self.buf[:4])
        item = cbor2.loads(self.buf[4 : 4 + length])
        self.buf = self.buf[4 + length :]
        assert isinstance(item, dict)
        return item

    async def until_reply(self, request_id: int) -> list[dict[str, Any]]:
        """Every frame up to and including the reply to `request_id`."""
        frames = [await self.frame()]
        while not (frames[-1]["kind"] in ("reply", "error") and frames[-1]["id"] == request_id):
            frames.append(await self.frame())
        return frames


def request(request_id: int, method: str = "status") -> dict[str, Any]:
    return {"kind": "request", "id": request_id, "method": method, "params": {}}


@asynccontextmanager
async def serving(
    daemon: Daemon, dispatch: Dispatch
) -> AsyncIterator[tuple[ClientConnection, RawPeer]]:
    """A `ClientConnection` of `daemon` answering with `dispatch` over a socket pair, and
    the raw client at the other end, past the hello."""
    ours, theirs = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    framed = FramedStream(trio.SocketStream(ours), Connection(Role.SERVER))
    conn = ClientConnection(daemon, framed, Caller(uid=os.getuid()), 1, dispatch)
    try:
        with theirs, trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)
                peer = RawPeer(theirs)
                await peer.send({"kind": "hello", "version": 1, "client": "order"})
                assert (await peer.frame())["kind"] == "welcome"
                yield conn, peer
                nursery.cancel_scope.cancel()
    finally:
        await framed.aclose()


async def test_an_event_queued_before_a_reply_goes_out_first(luod: Running) -> None:
    """The one case that would reorder: an event queued with no checkpoint before the
    reply, so the writer has not sent it yet when the reply is ready."""

    async def dispatch(conn: ClientConnection, req: Request) -> Reply | ErrorReply:
        if req.id % 2:
            conn.send_event_nowait("before", id=req.id)
        return Reply(id=req.id, result={"id": req.id})

    async with serving(luod.daemon, dispatch) as (_conn, peer):
        for request_id in range(1, 9):
            await peer.send(request(request_id))
            frames = await peer.until_reply(request_id)
            kinds = [(f["kind"], f.get("event")) for f in frames]
            expected = [("event", "before")] if request_id % 2 else []
            assert kinds == [*expected, ("reply", None)], (request_id, frames)


async def test_the_writer_waits_for_an_inline_reply_that_must_wait_for_room(
    luod: Running,
) -> None:
    """A reply too big for the socket buffer blocks its inline send until the client
    reads; an event queued meanwhile follows it, whole, instead of colliding with it."""
    big = b"\xa5" * (900 << 10)  # under the 1 MiB frame cap, over the socket buffer
    blocked = trio.Event()

    async def dispatch(conn: ClientConnection, req: Request) -> Reply | ErrorReply:
        blocked.set()
        return Reply(id=req.id, result={"blob": big})

    async with serving(luod.daemon, dispatch) as (conn, peer):
        await peer.send(request(1))
        await blocked.wait()
        await trio.testing.wait_all_tasks_blocked()  # the reply waits for room
        conn.send_event_nowait("after")
        frames = await peer.until_reply(1)
        assert [f["kind"] for f in frames] == ["reply"]
        assert frames[0]["result"]["blob"] == big
        assert (await peer.frame())["event"] == "after"
