"""Participants that crash, hang, NAK or reconnect at each phase of the barrier, and one
that comes back after the kexec later than its deadline.

Before the kexec, each misbehaviour cancels the update: state normal, the session intact
and usable, the error naming the participant and what it did; the daemon keeps the
session (it belongs to the uid, not to the connection), so the next update goes through.
After the kexec, the update has succeeded whatever a participant does: one that misses its
resume deadline is reported late (`participant.late`, `last_update.late`), and its resume,
when it comes, is accepted and completes the full blackout.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import ConnectionLost, RemoteError
from luod.kernel_model.memfd.file import MemfdFile
from tests.daemon.conftest import Running, preserve_memfd, running_luod

DATA = b"guest memory " * 1000
TARGET = "7.2.0"
PHASES = ("prepare", "freeze")


@pytest.fixture
async def luod(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_luod(tmp_path) as running:
        yield running


def assert_intact(luod: Running) -> None:
    host = luod.daemon.host
    assert host.kernel.state == "normal"
    assert not host.kernel.kho_out.finalized
    f = host.luo.outgoing["vm1"].by_token(1)
    assert f.data is None and not f.frozen
    memfd = f.file
    assert isinstance(memfd, MemfdFile)
    assert memfd.read(0, len(DATA)) == DATA
    memfd.write(0, DATA[:16])


async def register(client: TrioClient, *, create: bool) -> None:
    if create:
        await client.call("session.create", {"name": "vm1"})
        await preserve_memfd(client, "vm1", 1, DATA)
    await client.call("participant.register", {"name": "vm1", "sessions": ["vm1"]})
    await client.call("participant.ready", {})


async def ack(client: TrioClient, update_id: int, phase: str, ok: bool = True) -> None:
    params = {"update_id": update_id, "phase": phase, "ok": ok}
    if not ok:
        params["reason"] = f"cannot {phase} now"
    await client.call("participant.ack", params)


async def misbehave(
    luod: Running,
    behaviour: str,
    phase: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A participant that acknowledges every phase before `phase` and then, at `phase`:
    crashes (disconnects), hangs (never answers), NAKs, or reconnects (disconnects and
    registers again on a new connection). It misbehaves once: a participant that stays
    (hang, NAK) acknowledges everything of the next update."""
    async with open_client(str(luod.path), "vmm") as client:
        await register(client, create=True)
        task_status.started()
        misbehaved = False
        try:
            async for event in client.events():
                if event.event not in PHASES:
                    continue
                update_id = event.data["update_id"]
                if event.event != phase or misbehaved:
                    await ack(client, update_id, event.event)
                    continue
                misbehaved = True
                if behaviour == "nak":
                    await ack(client, update_id, phase, ok=False)
                elif behaviour in ("crash", "reconnect"):
                    break  # the connection goes, mid-phase
                # hang: no answer; the deadline runs out
        except ConnectionLost:
            return  # the kexec of the next update ends userspace
    if behaviour == "reconnect":
        await reconnect(luod)


async def reconnect(luod: Running) -> None:
    """Register again on a new connection; while the cancelled update still holds the
    barrier the daemon answers EBUSY, which is the documented answer: retry."""
    async with open_client(str(luod.path), "vmm-again") as client:
        with trio.fail_after(10):
            while True:
                try:
                    await register(client, create=False)
                    break
                except RemoteError as exc:
                    assert exc.errno == "EBUSY", exc
                    await trio.sleep(0.01)
        await cooperate(client)


async def cooperate(client: TrioClient) -> None:
    try:
        async for event in client.events():
            if event.event in PHASES:
                await ack(client, event.data["update_id"], event.event)
    except ConnectionLost:
        pass  # the kexec ends userspace


EXPECTED = {
    "crash": ("luod.ParticipantGone", "ECONNRESET", "disconnected during {phase}"),
    "reconnect": ("luod.ParticipantGone", "ECONNRESET", "disconnected during {phase}"),
    "hang": ("luod.ParticipantTimeout", "ETIMEDOUT", "did not acknowledge {phase} within"),
    "nak": ("luod.ParticipantRefused", "ECANCELED", "refused {phase}: cannot {phase} now"),
}


async def wait_blocking(ctl: TrioClient, phase: str) -> None:
    """`status` names who blocks the barrier while a participant hangs."""
    with trio.fail_after(10):
        while True:
            blocking = (await ctl.call("status")).result["blocking"]
            if blocking:
                assert blocking == [{"name": "vm1", "waiting_for": phase}]
                return
            await trio.sleep(0.01)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("behaviour", sorted(EXPECTED))
async def test_misbehaving_participant(
    luod: Running, nursery: trio.Nursery, behaviour: str, phase: str
) -> None:
    await nursery.start(misbehave, luod, behaviour, phase)
    name, errno, text = EXPECTED[behaviour]
    timeout = 1.0 if behaviour == "hang" else 30.0
    async with open_client(str(luod.path), "luoctl") as ctl:
        failure: list[RemoteError] = []

        async def update() -> None:
            with pytest.raises(RemoteError) as info:
                await ctl.call("update", {"target": TARGET, "timeout": timeout})
            failure.append(info.value)

        async with trio.open_nursery() as inner:
            inner.start_soon(update)
            if behaviour == "hang":
                await wait_blocking(ctl, phase)
        (error,) = failure
        assert error.name == name and error.errno == errno, error
        assert text.format(phase=phase) in error.message and "vm1" in error.message
        st = (await ctl.call("status")).result
        assert st["state"] == "normal" and st["blocking"] == []
        assert st["last_cancel"]["error"]["name"] == name
        assert_intact(luod)
        if behaviour == "reconnect":
            with trio.fail_after(10):  # the participant is back: poll for it
                while [p["state"] for p in st["participants"]] != ["ready"]:
                    await trio.sleep(0.01)
                    st = (await ctl.call("status")).result
        # the daemon kept the session: the next update goes through, data intact
        result = (await ctl.call("update", {"target": TARGET})).result
        assert result["damage"] == []
        async with open_client(str(luod.path), "vmm-after") as vmm:
            await vmm.call("session.retrieve", {"name": "vm1"})
            reply = await vmm.call("memfd.retrieve", {"session": "vm1", "token": 1})
            assert os.pread(reply.fds[0], len(DATA), 0) == DATA
            os.close(reply.fds[0])
            await vmm.call("session.finish", {"name": "vm1"})


async def test_late_resume_is_accepted_and_recorded(luod: Running, nursery: trio.Nursery) -> None:
    deadline = 0.3
    await nursery.start(cooperative, luod)
    async with open_client(str(luod.path), "luoctl") as ctl:
        await ctl.call("events.subscribe")
        result = (await ctl.call("update", {"target": TARGET, "timeout": deadline})).result
        assert result["full_blackout_ms"] is None and result["late"] == []
        with trio.fail_after(10):  # reported at the deadline, not at the late resume
            async for event in ctl.events():
                if event.event == "participant.late":
                    assert event.data == {"update_id": result["update_id"], "name": "vm1"}
                    break
        st = (await ctl.call("status")).result
        assert st["last_update"]["late"] == ["vm1"]
        assert [p["state"] for p in st["participants"]] == ["late"]
        assert st["last_update"]["full_blackout_ms"] is None
        async with open_client(str(luod.path), "vmm-late") as vmm:
            await vmm.call("session.retrieve", {"name": "vm1"})
            reply = await vmm.call("memfd.retrieve", {"session": "vm1", "token": 1})
            assert os.pread(reply.fds[0], len(DATA), 0) == DATA
            os.close(reply.fds[0])
            await vmm.call("session.finish", {"name": "vm1"})
            await vmm.call("participant.resumed", {"name": "vm1"})  # accepted
        st = (await ctl.call("status")).result
        record = st["last_update"]
        assert record["late"] == ["vm1"] and record["resumed"] is True
        assert record["resume_ms"]["vm1"] >= deadline * 1000
        assert record["full_blackout_ms"] >= deadline * 1000 > record["blackout_ms"]
        assert [p["state"] for p in st["participants"]] == ["resumed"]
        assert st["state"] == "normal"


async def cooperative(
    luod: Running, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_client(str(luod.path), "vmm") as client:
        await register(client, create=True)
        task_status.started()
        await cooperate(client)
