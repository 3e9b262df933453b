"""An in-process luod on a real Unix socket under tmp_path, served in the test's nursery."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from luod.daemon.core import Daemon
from luod.daemon.host import Host
from luod.daemon.listener import open_unix_listener
from luod.daemon.service import serve
from luod.ipc.async_client import TrioClient, open_client
from luod.kernel_model.images import default_image
from luod.kernel_model.kernel import BootConfig


@attrs.define
class Running:
    daemon: Daemon
    path: Path

    def client(self, name: str = "test") -> AsyncContextManagerClient:
        return open_client(str(self.path), name)


AsyncContextManagerClient = object  # the type of open_client(...): an async context manager


@asynccontextmanager
async def running_luod(
    directory: Path, config: BootConfig | None = None, **options: Any
) -> AsyncIterator[Running]:
    """A daemon serving `directory/luod.sock` for the duration of the block, booted with
    `config` (default: no hugetlb pools); `options` go to `Daemon` (faults_enabled,
    event_capacity, drop_grace)."""
    host = Host(ram=8 << 30, image=default_image(), config=config or BootConfig())
    listener = await open_unix_listener(directory / "luod.sock")
    try:
        daemon = Daemon(host, **options)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, daemon, listener.listener)
            yield Running(daemon, directory / "luod.sock")
            nursery.cancel_scope.cancel()
    finally:
        listener.close()
        host.close()


@pytest.fixture
async def luod(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_luod(tmp_path) as running:
        yield running


async def preserve_memfd(client: TrioClient, session: str, token: int, data: bytes) -> None:
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        await client.call("memfd.preserve", {"session": session, "token": token}, fds=[fd])
    finally:
        os.close(fd)
