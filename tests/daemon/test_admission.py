"""Connection caps and the hello deadline (`luod.daemon.admission`), against the daemon on
its real socket: refusals are one named error frame, then the close; the rest is served."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from luod.daemon.admission import ConnectionLimits
from luod.ipc.async_client import open_client
from luod.ipc.errors import RemoteError

from .conftest import running_luod

HELLO = cbor2.dumps({"kind": "hello", "version": 1, "client": "raw"})


async def frames_until_closed(sock: trio.socket.SocketType) -> list[dict[str, Any]]:
    data = b""
    while more := await sock.recv(65536):
        data += more
    frames = []
    while data:
        length = int.from_bytes(data[:4])
        frames.append(cbor2.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return frames


async def raw(path: Path) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    return sock


async def test_no_hello_in_time_is_hello_timeout_then_closed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running_luod(tmp_path, limits=ConnectionLimits(hello_timeout=10)) as luod:
        idle, loris = await raw(luod.path), await raw(luod.path)
        frame = len(HELLO).to_bytes(4) + HELLO
        await loris.send(frame[:7])  # a slow-loris: a byte now and then, never a whole hello
        start = trio.current_time()
        async with open_client(str(luod.path), "working") as client:
            await trio.sleep(9)
            await loris.send(frame[7:9])
            assert (await client.call("status")).result["state"] == "normal"
            with idle, loris:
                for sock in (idle, loris):
                    (error,) = await frames_until_closed(sock)
                    assert error["kind"] == "error" and error["id"] is None
                    assert error["error"]["name"] == "luod.HelloTimeout"
                    assert error["error"]["errno"] == "ETIMEDOUT"
                    assert (
                        error["error"]["message"]
                        == "no hello within 10 s (--hello-timeout); closing"
                    )
            assert 10 <= trio.current_time() - start < 11
            # The working client, past its hello long ago, is not affected.
            assert (await client.call("status")).result["state"] == "normal"


async def _refused(path: Path) -> RemoteError:
    with pytest.raises(RemoteError) as refused:
        async with open_client(str(path), "one too many"):
            pass
    return refused.value


async def test_a_uid_over_its_cap_is_refused_and_others_are_served(tmp_path: Path) -> None:
    limits = ConnectionLimits(per_uid=3)
    async with (
        running_luod(tmp_path, limits=limits) as luod,
        open_client(str(luod.path), "a") as a,
        open_client(str(luod.path), "b"),
    ):
        async with open_client(str(luod.path), "c"):
            error = await _refused(luod.path)
            assert error.name == "luod.TooManyConnections" and error.errno == "EAGAIN"
            assert error.object == "uid 0"
            assert "uid 0 has 3 connections open" in error.message
            assert "--max-connections-per-uid" in error.message
        # One closed: once the daemon has seen it go, there is room again.
        with trio.fail_after(5):
            while luod.daemon.admission.open >= 3:
                await trio.sleep(0.01)
        async with open_client(str(luod.path), "d") as d:
            status = (await d.call("status")).result
        connections = status["daemon"]["connections"]
        assert connections["open"] == 3 and connections["refused"] == 1
        assert connections["max_per_uid"] == 3
        assert (await a.call("status")).result["state"] == "normal"


async def test_the_total_cap_refuses_everyone_past_it(tmp_path: Path) -> None:
    limits = ConnectionLimits(per_uid=100, total=2)
    async with (
        running_luod(tmp_path, limits=limits) as luod,
        open_client(str(luod.path), "a"),
        open_client(str(luod.path), "b") as b,
    ):
        error = await _refused(luod.path)
        assert error.name == "luod.TooManyConnections" and error.errno == "EAGAIN"
        assert "luod has 2 connections open, its limit (--max-connections)" in error.message
        assert (await b.call("status")).result["daemon"]["connections"]["max"] == 2
