"""`memfd.preserve` with `progress`: the caller hears how far the copy is, other clients
are served between its chunks, and whatever happened meanwhile is checked before the
preserve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from luod.daemon.errors import DaemonError
from luod.daemon.host import Host
from luod.daemon.memfd_bridge import COPY_CHUNK, run_steps
from luod.daemon.owners import Caller
from luod.ipc.async_client import open_client
from luod.kernel_model.images import default_image
from luod.kernel_model.kernel import BootConfig
from luod.kernel_model.memfd.file import MemfdFile

from .conftest import Running

ROOT = Caller(uid=0)
SIZE = 4 * COPY_CHUNK + 4096  # five chunks, the last one short


def source_file(tmp_path: Path) -> int:
    path = tmp_path / "guest.img"
    with path.open("wb") as f:
        for i in range(SIZE // 4096):
            f.write(i.to_bytes(8, "little") * 512)
    return os.open(path, os.O_RDONLY)


async def test_progress_events_then_the_same_bytes(luod: Running, tmp_path: Path) -> None:
    fd = source_file(tmp_path)
    try:
        async with open_client(str(luod.path), "c") as c, open_client(str(luod.path), "o") as other:
            await c.call("session.create", {"name": "vm1"})
            params = {"session": "vm1", "token": 1, "progress": True}
            async with trio.open_nursery() as nursery:

                async def preserve() -> None:
                    reply = await c.call("memfd.preserve", params, fds=[fd])
                    assert reply.result["size"] == SIZE

                nursery.start_soon(preserve)
                # Served while the copy runs (or after it: either way, never refused).
                assert (await other.call("status")).result["state"] == "normal"
            progress = []  # sent before the reply: buffered by now
            with trio.fail_after(5):
                async for event in c.events():
                    progress.append(event)
                    if event.data["copied"] == SIZE:
                        break
    finally:
        os.close(fd)
    assert {e.event for e in progress} == {"memfd.progress"}
    copied = [e.data["copied"] for e in progress]
    assert copied == sorted(copied) and copied[0] == COPY_CHUNK and copied[-1] == SIZE
    assert all(e.data["total"] == SIZE and e.data["token"] == 1 for e in progress)
    memfd = luod.daemon.host.luo.outgoing["vm1"].by_token(1).file
    assert isinstance(memfd, MemfdFile)
    assert memfd.read(SIZE - 4096, 8) == (SIZE // 4096 - 1).to_bytes(8, "little")


def test_a_kexec_during_the_copy_preserves_nothing(tmp_path: Path) -> None:
    host = Host(ram=1 << 30, image=default_image(), config=BootConfig())
    fd = source_file(tmp_path)
    try:
        host.session_create(ROOT, "vm1")
        steps = host.memfd_from_fd(ROOT, "vm1", 1, fd, size=None, seals=[])
        assert next(steps) == (COPY_CHUNK, SIZE)
        host.boot_cold(None)  # what another client's kexec or boot does between chunks
        with pytest.raises(DaemonError) as info:
            next(steps)
        assert info.value.name == "luod.KernelChanged" and "nothing was preserved" in str(
            info.value
        )
        host.session_create(ROOT, "vm1")
        steps = host.memfd_from_fd(ROOT, "vm1", 1, fd, size=None, seals=[])
        next(steps)
        host.session_close(ROOT, "vm1")  # closed between chunks: looked up again at the end
        with pytest.raises(Exception, match="no session 'vm1'"):
            run_steps(steps)
        assert host.kernel.luo is not None and "vm1" not in host.kernel.luo.outgoing
    finally:
        os.close(fd)
        host.close()
