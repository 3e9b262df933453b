"""Participants that NAK, never answer, or vanish mid-freeze: each cancels the update and
leaves state normal with every object intact and usable."""

from __future__ import annotations

import contextlib

import pytest
import trio

from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import ConnectionLost, RemoteError
from luod.kernel_model.memfd.file import MemfdFile

from .conftest import Running, preserve_memfd

DATA = b"guest memory " * 1000


async def setup_vm(client: TrioClient) -> None:
    await client.call("session.create", {"name": "vm1"})
    await preserve_memfd(client, "vm1", 1, DATA)
    await client.call("participant.register", {"name": "vm1", "sessions": ["vm1"]})
    await client.call("participant.ready", {})


def assert_intact(luod: Running) -> None:
    host = luod.daemon.host
    assert host.kernel.state == "normal"
    assert not host.kernel.kho_out.finalized
    session = host.luo.outgoing["vm1"]
    memfd = session.by_token(1).file
    assert isinstance(memfd, MemfdFile)
    assert memfd.read(0, len(DATA)) == DATA
    assert session.by_token(1).data is None, "the prepared record was thrown away"
    memfd.write(0, b"still writable")


async def participant(
    luod: Running, behaviour: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_client(str(luod.path), "vmm") as client:
        await setup_vm(client)
        task_status.started()
        try:
            await follow(client, behaviour)
        except ConnectionLost:
            assert behaviour == "ack", "only a kexec ends a cooperative participant's connection"


async def follow(client: TrioClient, behaviour: str) -> None:
    async for event in client.events():
        if event.event not in ("prepare", "freeze"):
            continue
        update_id = event.data["update_id"]
        if behaviour == "nak" and event.event == "prepare":
            await client.call(
                "participant.ack",
                {"update_id": update_id, "phase": "prepare", "ok": False, "reason": "busy"},
            )
        elif behaviour == "silent":
            continue
        elif behaviour == "vanish" and event.event == "freeze":
            return  # closes the connection in the middle of freeze
        else:
            await client.call("participant.ack", {"update_id": update_id, "phase": event.event})


@pytest.mark.parametrize(
    ("behaviour", "error", "timeout"),
    [
        ("nak", "luod.ParticipantRefused", 30.0),
        ("silent", "luod.ParticipantTimeout", 0.5),
        ("vanish", "luod.ParticipantGone", 30.0),
    ],
)
async def test_failing_participant_cancels_everything(
    luod: Running, nursery: trio.Nursery, behaviour: str, error: str, timeout: float
) -> None:
    await nursery.start(participant, luod, behaviour)
    async with open_client(str(luod.path), "luoctl") as ctl:
        with pytest.raises(RemoteError) as info:
            await ctl.call("update", {"target": "7.2.0", "timeout": timeout})
        assert info.value.info.name == error
        assert "vm1" in info.value.info.message
        status = (await ctl.call("status")).result
        assert status["state"] == "normal"
    assert_intact(luod)


async def test_cooperative_participant_update_and_resume(
    luod: Running, nursery: trio.Nursery
) -> None:
    await nursery.start(participant, luod, "ack")
    async with open_client(str(luod.path), "luoctl") as ctl:
        result = (await ctl.call("update", {"target": "7.2.0"})).result
        assert result["to"] == "7.2.0"
        assert set(result["phases"]) == {"load", "check", "prepare", "freeze", "kexec", "restore"}
        assert result["blackout_ms"] > 0
        assert result["full_blackout_ms"] is None  # the participant has not resumed yet
        async with open_client(str(luod.path), "vmm-again") as vmm:
            await vmm.call("session.retrieve", {"name": "vm1"})
            reply = await vmm.call("memfd.retrieve", {"session": "vm1", "token": 1})
            import os

            assert os.pread(reply.fds[0], len(DATA), 0) == DATA
            os.close(reply.fds[0])
            await vmm.call("session.finish", {"name": "vm1"})
            await vmm.call("participant.resumed", {"name": "vm1"})
        status = (await ctl.call("status")).result
        assert status["state"] == "normal"
        assert status["last_update"]["full_blackout_ms"] >= result["blackout_ms"]
        assert [p["state"] for p in status["participants"]] == ["resumed"]


async def test_participant_sees_kexec_before_its_connection_ends(luod: Running) -> None:
    seen: list[str] = []

    async def vmm(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with open_client(str(luod.path), "vmm") as client:
            await setup_vm(client)
            task_status.started()
            try:
                async for event in client.events():
                    seen.append(event.event)
                    if event.event in ("prepare", "freeze"):
                        await client.call(
                            "participant.ack",
                            {"update_id": event.data["update_id"], "phase": event.event},
                        )
            except ConnectionLost:
                pass

    async with trio.open_nursery() as nursery:
        await nursery.start(vmm)
        async with open_client(str(luod.path), "luoctl") as ctl:
            await ctl.call("update", {"target": "7.3.0"})
    assert seen[-1] == "kexec", seen


async def test_resumed_on_a_new_connection_then_gone_does_not_block(luod: Running) -> None:
    """A participant that reports resumed without registering again, then disconnects, is
    gone: the next update does not wait for it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(participant, luod, "ack")
        async with open_client(str(luod.path), "luoctl") as ctl:
            await ctl.call("update", {"target": "7.3.0"})
    async with open_client(str(luod.path), "vmm-again") as vmm:
        await vmm.call("session.retrieve", {"name": "vm1"})
        await vmm.call("session.finish", {"name": "vm1"})
        await vmm.call("participant.resumed", {"name": "vm1"})
    async with open_client(str(luod.path), "luoctl") as ctl:
        result = (await ctl.call("update", {"target": "7.3.0", "timeout": 2.0})).result
        assert result["to"] == "7.3.0"


async def test_update_says_whom_it_waits_for_as_answers_come_in(luod: Running) -> None:
    """`update.waiting` at the start of each barrier, and again after each answer that
    leaves someone waiting: what `luoctl update` shows a person."""

    async def quiet(name: str, task_status: trio.TaskStatus[None]) -> None:
        async with open_client(str(luod.path), name) as client:
            await client.call("session.create", {"name": name})
            await client.call("participant.register", {"name": name, "sessions": [name]})
            await client.call("participant.ready", {})
            task_status.started()
            with contextlib.suppress(ConnectionLost):  # the kexec ends the connection
                await follow(client, "ack")

    async with trio.open_nursery() as nursery:
        await nursery.start(quiet, "vmA")
        await nursery.start(quiet, "vmB")
        async with open_client(str(luod.path), "luoctl") as ctl:
            await ctl.call("update", {"target": "7.3.0"})
    waiting = [
        (e.data["phase"], len(e.data["participants"]))
        for e in luod.daemon.bus.recent()
        if e.event == "update.waiting"
    ]
    assert waiting == [("prepare", 2), ("prepare", 1), ("freeze", 2), ("freeze", 1)]
    first = next(e for e in luod.daemon.bus.recent() if e.event == "update.waiting")
    assert first.data["participants"] == ["vmA", "vmB"]
