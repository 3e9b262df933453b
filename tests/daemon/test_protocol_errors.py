"""docs/protocol.md against the real daemon on its real socket, with a hand-made client:
a duplicate in-flight id and fds nobody declared are `luod.BadMessage`, answered with an
error frame (id null) before the daemon closes; an fd luod cannot read is `luod.BadSource`
naming the session and token, and the connection stays open."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio

from luod.ipc.async_client import open_client
from luod.ipc.errors import RemoteError
from luod.ipc.fdpass import fds_ancillary

from .conftest import Running

HELLO = {"kind": "hello", "version": 1, "client": "raw"}


def frame(item: dict[str, Any]) -> bytes:
    body = cbor2.dumps(item)
    return struct.pack(">I", len(body)) + body


def status(request_id: int, nfds: int = 0) -> bytes:
    return frame(
        {"kind": "request", "id": request_id, "method": "status", "params": {}, "nfds": nfds}
    )


async def converse(
    path: Path, *chunks: tuple[bytes, list[int]], hello_fds: tuple[int, ...] = ()
) -> list[dict[str, Any]]:
    """Send hello (with `hello_fds`), wait for the welcome unless fds went with it, send
    each chunk (bytes, fds) in one sendmsg; return every frame the daemon sent until it
    closed."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    data = b""
    with sock, trio.fail_after(10):
        await sock.connect(str(path))
        await sock.sendmsg([frame(HELLO)], fds_ancillary(hello_fds))
        while not hello_fds and len(data) < 4 + int.from_bytes(data[:4] or b"\xff" * 4):
            data += await sock.recv(65536)
        for chunk, fds in chunks:
            await sock.sendmsg([chunk], fds_ancillary(fds))
        while more := await sock.recv(65536):
            data += more
    frames = []
    while data:
        length = int.from_bytes(data[:4])
        frames.append(cbor2.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return frames


def memfd() -> int:
    return os.memfd_create("stray", os.MFD_CLOEXEC)


def bad_message(frames: list[dict[str, Any]]) -> str:
    last = frames[-1]
    assert last["kind"] == "error" and last["id"] is None, frames
    assert last["error"]["name"] == "luod.BadMessage" and last["error"]["errno"] == "EPROTO"
    message: str = last["error"]["message"]
    return message


async def test_a_duplicate_in_flight_id_is_answered_then_closed(luod: Running) -> None:
    # In flight: an update waiting for a participant that never acknowledges. (Not a
    # status: its answer may go out before the next frame is read, freeing its id.)
    update = frame({"kind": "request", "id": 7, "method": "update", "params": {"target": "7.3.0"}})
    async with open_client(str(luod.path), "vm") as vm:
        await vm.call("participant.register", {"name": "vm", "sessions": []})
        await vm.call("participant.ready", {})
        frames = await converse(luod.path, (update + status(7), []))
    assert frames[0]["kind"] == "welcome"
    assert bad_message(frames) == "request id 7 is already in flight"


@pytest.mark.parametrize("declared", [0, 1])
async def test_fds_on_a_method_that_takes_none_are_refused(luod: Running, declared: int) -> None:
    fd = memfd()
    try:
        frames = await converse(luod.path, (status(1, nfds=declared), [fd]))
    finally:
        os.close(fd)
    message = bad_message(frames)
    if declared:
        assert message == "status takes no file descriptors; request 1 sent 1"
        assert frames[-1]["error"]["object"] == "status"
    else:
        assert message == "1 file descriptor(s) arrived that no message declared"
    assert all(f["kind"] != "reply" for f in frames)


async def test_fds_sent_with_hello_are_refused(luod: Running) -> None:
    fd = memfd()
    try:
        frames = await converse(luod.path, hello_fds=(fd,))
    finally:
        os.close(fd)
    assert bad_message(frames) == "1 file descriptor(s) arrived that no message declared"
    assert [f["kind"] for f in frames] == ["error"]  # no welcome


async def test_an_fd_for_the_next_frame_of_the_same_sendmsg_is_fine(luod: Running) -> None:
    # docs/protocol.md: the fds go with the sendmsg carrying their frame's first byte,
    # which may also carry earlier frames that declare none.
    async with luod.client() as client:  # type: ignore[attr-defined]
        await client.call("session.create", {"name": "vm1"})
    preserve = {"kind": "request", "id": 2, "method": "memfd.preserve", "nfds": 1}
    preserve["params"] = {"session": "vm1", "token": 1}
    fd = memfd()
    os.write(fd, b"data")
    try:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock, trio.fail_after(10):
            await sock.connect(str(luod.path))
            await sock.send(frame(HELLO))
            data = await sock.recv(65536)
            await sock.sendmsg([status(1) + frame(preserve)], fds_ancillary([fd]))
            while data.count(b"reply") < 2:
                data += await sock.recv(65536)
    finally:
        os.close(fd)
    assert b"luod.BadMessage" not in data


@pytest.mark.parametrize(
    ("how", "errno_name", "cause"),
    [
        (os.O_WRONLY, "EBADF", "not open for reading (write-only, or O_PATH)"),
        (os.O_PATH, "EBADF", "not open for reading (write-only, or O_PATH)"),
    ],
)
async def test_an_unreadable_source_is_bad_source_naming_the_file(
    luod: Running, tmp_path: Path, how: int, errno_name: str, cause: str
) -> None:
    source = tmp_path / "guest.img"
    source.write_bytes(b"x" * 5000)
    fd = os.open(source, how | os.O_CLOEXEC)
    async with luod.client() as client:  # type: ignore[attr-defined]
        await client.call("session.create", {"name": "vm1"})
        try:
            with pytest.raises(RemoteError) as refused:
                await client.call("memfd.preserve", {"session": "vm1", "token": 1}, fds=[fd])
        finally:
            os.close(fd)
        assert refused.value.name == "luod.BadSource"
        assert refused.value.errno == errno_name
        assert refused.value.object == "vm1/0x1"
        assert (
            refused.value.message
            == f"cannot read the fd sent for vm1/0x1: it is {cause} (Bad file descriptor)"
        )
        # The connection is still good, and nothing was preserved.
        shown = await client.call("session.show", {"name": "vm1"})
        assert shown.result["files"] == []
        pipe_r, pipe_w = os.pipe()
        try:
            with pytest.raises(RemoteError, match="is a pipe: the memfd source") as pipe:
                await client.call("memfd.preserve", {"session": "vm1", "token": 1}, fds=[pipe_r])
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
        assert pipe.value.name == "luod.BadSource" and pipe.value.errno == "EINVAL"


async def test_an_unreadable_object_source_is_bad_source_naming_the_object(
    luod: Running, tmp_path: Path
) -> None:
    source = tmp_path / "ram.img"
    source.write_bytes(b"x" * 4096)
    fd = os.open(source, os.O_WRONLY | os.O_CLOEXEC)
    async with luod.client() as client:  # type: ignore[attr-defined]
        try:
            with pytest.raises(RemoteError) as refused:
                spec = {"name": "ram", "type": "memfd", "size": 4096}
                await client.call("object.create", {"object": spec}, fds=[fd])
        finally:
            os.close(fd)
        assert refused.value.name == "luod.BadSource" and refused.value.errno == "EBADF"
        assert refused.value.object == "object 'ram'"
        assert (await client.call("object.list")).result["objects"] == []
