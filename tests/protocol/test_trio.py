"""The trio adapter and client: against the trio test server over memory streams (with
the autojump clock) and over a real Unix socket (fds, credentials). Replies out of order,
events interleaved with replies, cancellation, overflow, failure and shutdown."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio
import trio.testing

from luod.ipc.async_client import connect_stream, open_client
from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import CLOSED, Connection
from luod.ipc.errors import (
    ConnectionLost,
    DaemonUnreachable,
    LocalProtocolError,
    ProtocolErrorName,
    RemoteError,
    RemoteProtocolError,
)
from luod.ipc.fdpass import close_fds, fds_ancillary
from luod.ipc.messages import ErrorReply, Event, Hello
from luod.ipc.state import Role

from .helpers import cbor_frame
from .trio_server import serve_connection, serve_unix


async def start_memory_server(nursery: trio.Nursery, **kwargs: object) -> trio.abc.Stream:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: serve_connection(server_stream, **kwargs))  # type: ignore[arg-type]
    return client_stream


async def test_call_over_memory_streams(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "participant") as client:
        assert client.server_name == "trio-luod" and client.version == 1
        assert not client.can_pass_fds
        assert (await client.call("echo", {"a": [1, "b"]})).result == {"a": [1, "b"]}
        with pytest.raises(RemoteError) as info:
            await client.call("nope")
        assert info.value.name == "luod.UnknownMethod" and info.value.object == "nope"


async def test_replies_out_of_order(nursery: trio.Nursery, autojump_clock: object) -> None:
    stream = await start_memory_server(nursery)
    finished: list[str] = []
    async with connect_stream(stream, "p") as client:

        async def call(seconds: float, value: str) -> None:
            assert (
                await client.call("sleep", {"seconds": seconds, "value": value})
            ).result == value
            finished.append(value)

        async with trio.open_nursery() as calls:
            calls.start_soon(call, 3.0, "slow")
            calls.start_soon(call, 2.0, "medium")
            calls.start_soon(call, 1.0, "fast")
    assert finished == ["fast", "medium", "slow"]


async def test_events_interleaved(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p") as client:
        assert (await client.call("emit", {"n": 3})).result == "emitted"
        seen = []
        async for event in client.events():
            seen.append(event.data["i"])
            if len(seen) == 3:
                break
        assert seen == [0, 1, 2]


async def test_event_overflow_drops_oldest(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p", event_buffer=2) as client:
        await client.call("emit", {"n": 5})
        assert client.events_dropped == 3
        events = client.events()
        assert [(await events.__anext__()).data["i"] for _ in range(2)] == [3, 4]


async def test_cancelled_call(nursery: trio.Nursery, autojump_clock: object) -> None:
    """Cancelling a waiting call abandons it; its late reply is dropped and the client
    keeps working."""
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p") as client:
        with trio.move_on_after(1.0) as scope:
            await client.call("sleep", {"seconds": 5.0, "value": "late"})
        assert scope.cancelled_caught
        assert client._waiters == {}
        await trio.sleep(10)  # the late reply arrives and is dropped
        assert (await client.call("echo", {"x": 1})).result == {"x": 1}
        with trio.move_on_after(1.0):
            await client.call("hang")
        assert (await client.call("echo", {"y": 2})).result == {"y": 2}


async def test_daemon_hangs_up(nursery: trio.Nursery, autojump_clock: object) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p") as client:
        async with trio.open_nursery() as waiting:

            async def wait_forever() -> None:
                with pytest.raises(ConnectionLost):
                    await client.call("hang")

            waiting.start_soon(wait_forever)
            await trio.sleep(1)
            with pytest.raises(ConnectionLost):
                await client.call("close")
        with pytest.raises(ConnectionLost):
            async for _ in client.events():
                pass
        with pytest.raises(ConnectionLost):
            await client.call("echo")


async def test_events_end_after_close(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p") as client:
        await client.aclose()
        assert [e async for e in client.events()] == []
        with pytest.raises(ConnectionLost):
            await client.call("echo")


async def test_body_exception_unwrapped(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    with pytest.raises(ValueError, match="mine"):
        async with connect_stream(stream, "p"):
            raise ValueError("mine")


async def test_fds_need_a_unix_socket(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery)
    async with connect_stream(stream, "p") as client:
        with pytest.raises(LocalProtocolError) as info:
            await client.call("readfd", fds=[0])
        assert info.value.name is ProtocolErrorName.MISSING_FDS
        assert (await client.call("echo")).result == {}


async def test_version_refused(nursery: trio.Nursery) -> None:
    stream = await start_memory_server(nursery, supported_versions=frozenset({2}))
    with pytest.raises(RemoteError) as info:
        async with connect_stream(stream, "p"):
            pass
    assert info.value.name == "luod.ProtocolVersion"


async def test_accept_hello_refuses_garbage() -> None:
    """Server side: a first message that is not hello gets an `error` (id null)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    framed = FramedStream(server_stream, Connection(Role.SERVER))
    await client_stream.send_all(cbor_frame({"kind": "event", "event": "e", "ts": 0.0, "data": {}}))
    with pytest.raises(RemoteProtocolError) as info:
        await framed.accept_hello("s")
    assert info.value.name is ProtocolErrorName.HELLO_REQUIRED
    reader = Connection(Role.CLIENT)
    reader.send(Hello(version=1, client="c"))
    reader.receive_data(await client_stream.receive_some())
    reply = reader.next_event()
    assert isinstance(reply, ErrorReply) and reply.id is None
    assert reply.error.name == "luod.HelloRequired"


async def test_concurrent_sends_are_refused() -> None:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    framed = FramedStream(client_stream, Connection(Role.CLIENT))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(framed.send, Hello(version=1, client="c"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await framed.send(Hello(version=1, client="c"))
        await server_stream.receive_some()


async def test_framed_receive_closed() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    framed = FramedStream(server_stream, Connection(Role.SERVER))
    await client_stream.aclose()
    assert await framed.receive() is CLOSED


class TestUnixSocket:
    @pytest.fixture
    async def path(self, tmp_path: Path, nursery: trio.Nursery) -> Path:
        path = tmp_path / "trio.sock"
        await nursery.start(serve_unix, path)
        return path

    async def test_fds_both_ways(self, path: Path) -> None:
        async with open_client(path, "vmm") as client:
            assert client.can_pass_fds
            fd = os.memfd_create("to-trio")
            os.write(fd, b"guest ram")
            try:
                assert (await client.call("readfd", fds=[fd])).result == [b"guest ram"]
            finally:
                os.close(fd)
            reply = await client.call("makefd")
            try:
                assert os.pread(reply.fds[0], 100, 0) == b"from trio"
            finally:
                close_fds(reply.fds)

    async def test_peer_credentials(self, path: Path) -> None:
        async with open_client(path, "vmm") as client:
            assert (await client.call("whoami")).result == [os.getpid(), os.getuid(), os.getgid()]

    async def test_events_and_replies(self, path: Path) -> None:
        async with open_client(path, "vmm") as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.call, "emit", {"n": 2})
                got: list[Event] = []
                async for event in client.events():
                    got.append(event)
                    if len(got) == 2:
                        break
            assert [e.data["i"] for e in got] == [0, 1]

    async def test_unreachable(self, tmp_path: Path) -> None:
        with pytest.raises(DaemonUnreachable):
            async with open_client(tmp_path / "missing.sock", "vmm"):
                pass

    async def test_ctrunc_breaks_the_stream(self) -> None:
        """More fds than the reader allows per read: all closed, `luod.MissingFds`."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(b))
        framed = FramedStream(stream, Connection(Role.SERVER), max_fds_per_read=1)
        fds = [os.memfd_create("x") for _ in range(3)]
        a.sendmsg([b"\x00"], fds_ancillary(fds))
        close_fds(fds)
        with pytest.raises(RemoteProtocolError) as info:
            await framed.receive()
        assert info.value.name is ProtocolErrorName.MISSING_FDS
        with pytest.raises(RemoteProtocolError):
            await framed.receive()  # sticky
        await framed.aclose()
        a.close()
