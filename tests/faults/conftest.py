"""The fault tests' workload and checks, on an in-process luod with faults enabled.

The workload: session "a" holds two memfds with data (tokens 1 and 2), session "b" one
(token 1). `Workload.verify_outgoing` proves, from the model itself, that a cancelled
update left everything as it was (state normal, nothing finalized, records thrown away,
every byte intact, every memfd writable); `Workload.update_and_verify` then proves it end
to end: a real update, each memfd retrieved through the socket and compared byte for byte,
each session finished, state normal again.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from luod.ipc.async_client import TrioClient, open_client
from luod.kernel_model.memfd.file import MemfdFile
from tests.daemon.conftest import Running, preserve_memfd, running_luod

TARGET = "7.2.0"


@pytest.fixture
async def luod(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_luod(tmp_path, faults_enabled=True) as running:
        yield running


@pytest.fixture
async def ctl(luod: Running) -> AsyncIterator[TrioClient]:
    async with open_client(str(luod.path), "fault-test") as client:
        yield client


async def retrieve_bytes(client: TrioClient, session: str, token: int) -> bytes:
    reply = await client.call("memfd.retrieve", {"session": session, "token": token})
    (fd,) = reply.fds
    try:
        return os.pread(fd, reply.result["size"], 0)
    finally:
        os.close(fd)


async def status(client: TrioClient) -> dict[str, Any]:
    result: dict[str, Any] = (await client.call("status")).result
    return result


@attrs.define
class Workload:
    # (session, token) -> bytes
    data: dict[tuple[str, int], bytes] = attrs.field(factory=dict)
    frames: int | None = None  # KHO-preserved frames when nothing is prepared

    @classmethod
    async def build(cls, client: TrioClient, luod: Running, seed: int = 7) -> Workload:
        rng = random.Random(seed)
        workload = cls()
        for session, token, size in (("a", 1, 64 << 10), ("a", 2, 5000), ("b", 1, 12345)):
            if token == 1:
                await client.call("session.create", {"name": session})
            await workload.add(client, session, token, rng.randbytes(size))
        # A prepare and a cancel first: luod preserves its ownership table at prepare and
        # keeps it, so only from then on is the count of preserved frames the baseline.
        await client.call("prepare")
        await client.call("cancel")
        workload.frames = luod.daemon.host.kernel.kho_out.preserved.frame_count()
        return workload

    async def add(self, client: TrioClient, session: str, token: int, data: bytes) -> None:
        await preserve_memfd(client, session, token, data)
        self.data[(session, token)] = data

    @property
    def sessions(self) -> list[str]:
        return sorted({s for s, _ in self.data})

    def verify_outgoing(self, luod: Running, *, frames: bool = True) -> None:
        """In the model: state normal, nothing finalized, every record thrown away (not a
        page of them still preserved), every byte intact, every memfd still writable."""
        host = luod.daemon.host
        assert host.kernel.state == "normal"
        assert not host.kernel.kho_out.finalized
        if frames:
            assert host.kernel.kho_out.preserved.frame_count() == self.frames
        luo = host.luo
        assert sorted(s for s in luo.outgoing if not s.startswith("luod.")) == self.sessions
        for (name, token), data in self.data.items():
            f = luo.outgoing[name].by_token(token)
            assert f.data is None and f.compatible is None and not f.frozen, (name, token)
            memfd = f.file
            assert isinstance(memfd, MemfdFile)
            assert memfd.size == len(data)
            assert memfd.read(0, len(data)) == data, (name, token)
            memfd.write(0, data[:16])  # writable (with the same bytes: data stays as built)

    async def update_and_verify(self, client: TrioClient, luod: Running) -> dict[str, Any]:
        """A real update; then every memfd retrieved and compared; every session finished."""
        result: dict[str, Any] = (await client.call("update", {"target": TARGET})).result
        assert result["damage"] == [], result["damage"]
        await self.retrieve_all(client)
        assert (await status(client))["state"] == "normal"
        return result

    async def retrieve_all(
        self, client: TrioClient, *, skip: tuple[str, int] | None = None
    ) -> None:
        for name in self.sessions:
            await client.call("session.retrieve", {"name": name})
            for (session, token), data in self.data.items():
                if session == name and (session, token) != skip:
                    assert await retrieve_bytes(client, session, token) == data, (session, token)
            await client.call("session.finish", {"name": name})
