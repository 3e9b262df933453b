"""One test per fault point, generated from the registry (`luod.kernel_model.faults.POINTS`).

Every point is armed through the daemon's admin request (`fault.arm`, on a daemon started
with faults enabled), a workload of two sessions with memfds goes through an update, and
the test asserts the point's contract: state, data and the error.

- Before the kexec: the update is cancelled automatically, state is normal, every object is
  preserved, intact and usable (checked in the model, then by a real update that retrieves
  every byte), and the error is the injected fault, naming the point.
- After the kexec: the update's record lists the damage per session and per file, every
  other session retrieves and finishes normally, and the state is consistent.

`SCENARIOS` maps every point to its scenario: a point added to the registry without one
fails `test_fault_point` (and `test_every_point_has_a_scenario`); a scenario that never
reaches its point fails too (the injector records every fault fired).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from luod.ipc.async_client import TrioClient
from luod.ipc.errors import RemoteError
from luod.kernel_model import faults
from tests.daemon.conftest import Running

from .conftest import TARGET, Workload, retrieve_bytes, status


@attrs.define
class Case:
    point: str
    luod: Running
    ctl: TrioClient
    work: Workload

    async def arm(self, point: str | None = None, **params: Any) -> None:
        await self.ctl.call("fault.arm", {"point": point or self.point, **params})

    async def update(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self.ctl.call("update", {"target": TARGET})).result
        return result

    async def failing(self, method: str, params: dict[str, Any], point: str) -> RemoteError:
        """`method` fails with the fault injected at `point`, and says so."""
        with pytest.raises(RemoteError) as info:
            await self.ctl.call(method, params)
        error = info.value
        assert error.name == "luod.InjectedFault", error
        assert error.errno == "EIO"
        assert f"injected fault at {point} " in error.message, error.message
        return error


Scenario = Callable[[Case], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(*points: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        for point in points:
            assert point in faults.BY_NAME, point
            SCENARIOS[point] = fn
        return fn

    return register


# -- before the kexec ---------------------------------------------------------------------


@scenario(
    "handler.prepare",
    "handler.freeze",
    "luo.prepare",
    "kho.finalize",
    "update.load",
    "update.check",
    "update.prepare-barrier",
    "update.freeze-barrier",
    "update.kexec-start",
)
async def cancels_the_update(case: Case) -> None:
    # Handler points fire on session b's file: a's files were prepared (and frozen) by
    # then, so the rollback has real work to undo.
    params = {"match": "b/1"} if case.point.startswith("handler.") else {}
    loaded = (await status(case.ctl))["loaded"]
    await case.arm(**params)
    error = await case.failing("update", {"target": TARGET}, case.point)
    st = await status(case.ctl)
    assert st["state"] == "normal"
    assert st["last_update"] is None  # no kexec happened
    cancel = st["last_cancel"]
    assert cancel["error"]["message"] == error.message  # the first cause, kept
    assert cancel["rollback"] == []
    assert cancel["state"] == "normal"
    if case.point in ("update.load", "update.check"):
        assert st["loaded"] == loaded != TARGET  # staging the image is undone too
    case.work.verify_outgoing(case.luod)
    await case.work.update_and_verify(case.ctl, case.luod)


@scenario("handler.cancel", "handler.unfreeze")
async def rollback_goes_on(case: Case) -> None:
    # The rollback ops cannot fail in Linux: a complaint is recorded, the rollback still
    # runs for every file, and the error is the first cause (the kexec that failed).
    await case.arm(match="a/1")
    await case.arm("update.kexec-start")
    error = await case.failing("update", {"target": TARGET}, "update.kexec-start")
    st = await status(case.ctl)
    assert st["state"] == "normal"
    assert st["last_cancel"]["error"]["message"] == error.message
    (complaint,) = st["last_cancel"]["rollback"]
    assert complaint["name"] == "luod.InjectedFault"
    assert f"injected fault at {case.point} (memfd a/0x1)" in complaint["message"]
    case.work.verify_outgoing(case.luod)
    await case.work.update_and_verify(case.ctl, case.luod)


@scenario("handler.preserve")
async def preserve_fails_alone(case: Case) -> None:
    await case.arm(match="memfd")
    data = b"third file" * 100
    params = {"session": "a", "token": 3}
    fd = os.memfd_create("t", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        with pytest.raises(RemoteError) as info:
            await case.ctl.call("memfd.preserve", params, fds=[fd])
    finally:
        os.close(fd)
    assert info.value.name == "luod.InjectedFault"
    assert "injected fault at handler.preserve (memfd a/0x3)" in info.value.message
    case.work.verify_outgoing(case.luod)  # a/3 is not there; a/1, a/2, b/1 untouched
    await case.work.add(case.ctl, "a", 3, data)  # the fault is spent: a retry works
    await case.work.update_and_verify(case.ctl, case.luod)


@scenario("handler.unpreserve")
async def unpreserve_fails_alone(case: Case) -> None:
    await case.arm(match="a/2")
    await case.failing("file.unpreserve", {"session": "a", "token": 2}, case.point)
    case.work.verify_outgoing(case.luod)  # a/2 is still preserved, intact, writable
    await case.arm(match="a/1")
    # A close stops at the first file that cannot go: the newest one went, a/1 stays.
    await case.failing("session.close", {"name": "a"}, case.point)
    del case.work.data[("a", 2)]
    case.work.verify_outgoing(case.luod, frames=False)
    await case.work.update_and_verify(case.ctl, case.luod)


# -- after the kexec ----------------------------------------------------------------------


@scenario("handler.retrieve")
async def retrieve_fails_for_one_file(case: Case) -> None:
    await case.arm(match="a/1")
    result = await case.update()
    assert result["damage"] == [] and result["state"] == "updated"
    await case.ctl.call("session.retrieve", {"name": "a"})
    for _ in range(2):  # the failure is sticky: the same error every time
        await case.failing("memfd.retrieve", {"session": "a", "token": 1}, case.point)
    # the rest goes on: the other file of the session, and the other session
    assert await retrieve_bytes(case.ctl, "a", 2) == case.work.data[("a", 2)]
    st = await status(case.ctl)
    (damage,) = st["last_update"]["damage"]
    assert damage["session"] == "a" and damage["token"] == 1 and damage["step"] == "retrieve"
    assert damage["error"]["name"] == "luod.InjectedFault"
    assert case.point in damage["error"]["message"]
    incoming_a = next(s for s in st["sessions"] if s["name"] == "a")
    files = {f["token"]: f for f in incoming_a["files"]}
    assert case.point in files[1]["error"]["message"] and not files[1]["retrieved"]
    assert files[2]["error"] is None and files[2]["retrieved"]
    await case.ctl.call("session.finish", {"name": "a"})
    del case.work.data[("a", 1)], case.work.data[("a", 2)]
    await case.work.retrieve_all(case.ctl)
    assert (await status(case.ctl))["state"] == "normal"


@scenario("handler.can_finish")
async def finish_is_vetoed(case: Case) -> None:
    await case.arm(match="a")
    await case.update()
    for name in ("a", "b"):
        await case.ctl.call("session.retrieve", {"name": name})
    await case.failing("session.finish", {"name": "a"}, case.point)
    st = await status(case.ctl)
    assert st["state"] == "updated"
    assert {s["name"] for s in st["sessions"]} == {"a", "b"}  # a veto changes nothing
    for (session, token), data in case.work.data.items():
        assert await retrieve_bytes(case.ctl, session, token) == data
    await case.ctl.call("session.finish", {"name": "b"})
    await case.ctl.call("session.finish", {"name": "a"})  # the fault is spent
    st = await status(case.ctl)
    assert st["state"] == "normal" and st["last_update"]["damage"] == []


@scenario("handler.finish")
async def finish_leaks_one_file(case: Case) -> None:
    await case.arm(match="a/1")
    await case.update()
    await case.ctl.call("session.retrieve", {"name": "a"})
    assert await retrieve_bytes(case.ctl, "a", 2) == case.work.data[("a", 2)]
    # a/1 is never retrieved: finish must discard it, and its handler fails to.
    await case.ctl.call("session.finish", {"name": "a"})
    st = await status(case.ctl)
    (damage,) = st["last_update"]["damage"]
    assert (damage["session"], damage["token"], damage["step"]) == ("a", 1, "finish")
    assert case.point in damage["error"]["message"]
    assert {s["name"] for s in st["sessions"]} == {"b"}  # a finished all the same
    del case.work.data[("a", 1)], case.work.data[("a", 2)]
    await case.work.retrieve_all(case.ctl)
    assert (await status(case.ctl))["state"] == "normal"


def assert_every_session_lost(record: dict[str, Any], step: str, name: str, text: str) -> None:
    damage = record["damage"]
    assert sorted(d["session"] for d in damage) == ["a", "b"]
    for d in damage:
        assert d["token"] is None and d["step"] == step, d
        assert d["error"]["name"] == name, d
        assert text in d["error"]["message"], d


@scenario("boot.kho-parse")
async def cold_boot(case: Case) -> None:
    await case.arm()
    record = await case.update()
    assert record["boot"]["kind"] == "cold"
    assert f"injected fault at {case.point} ({TARGET})" in record["boot"]["reason"]
    assert_every_session_lost(record, "boot", "luod.ColdBoot", case.point)
    st = await status(case.ctl)
    assert st["state"] == "normal" and st["sessions"] == []
    assert st["last_update"]["damage"] == record["damage"]
    with pytest.raises(RemoteError) as info:
        await case.ctl.call("session.retrieve", {"name": "a"})
    assert info.value.name == "luod.NoSuchSession"
    # a consistent machine: a new workload goes through an update
    work = await Workload.build(case.ctl, case.luod, seed=8)
    await work.update_and_verify(case.ctl, case.luod)


@scenario("boot.luo-root", "luo.deserialize")
async def unusable_until_cold_boot(case: Case) -> None:
    await case.arm()
    record = await case.update()
    st = await status(case.ctl)
    if case.point == "boot.luo-root":
        assert record["state"] == st["state"] == "panicked"
        assert case.point in st["kernel"]["panic"]
        assert_every_session_lost(record, "boot", "luod.KernelPanicked", case.point)
        expected = "Kernel panic"
    else:
        assert record["state"] == st["state"] == "updated"
        assert case.point in record["device_error"] and case.point in st["device_error"]
        assert_every_session_lost(record, "deserialize", "luod.LuoUnavailable", case.point)
        expected = "incoming live-update data unusable"
    with pytest.raises(RemoteError) as info:
        await case.ctl.call("session.retrieve", {"name": "a"})
    # the LUO device cannot be opened: every request for it says why
    assert info.value.name == "luod.LuoUnavailable" and info.value.errno == "EIO"
    assert expected in info.value.message and case.point in info.value.message
    # the way out is a cold boot; then the machine works again
    await case.ctl.call("boot.cold", {})
    assert (await status(case.ctl))["state"] == "normal"
    work = await Workload.build(case.ctl, case.luod, seed=9)
    await work.update_and_verify(case.ctl, case.luod)


@scenario("update.restore")
async def owners_lost(case: Case) -> None:
    await case.arm()
    record = await case.update()
    assert record["state"] == "updated"
    damage = record["damage"]
    assert sorted(d["session"] for d in damage) == ["a", "b"]
    for d in damage:
        assert d["step"] == "restore" and d["error"]["name"] == "luod.InjectedFault"
        assert "owner unknown, only root may take it" in d["error"]["message"]
        assert case.point in d["error"]["message"]
    st = await status(case.ctl)
    assert all(s["owner"] == 0 for s in st["sessions"])
    await case.work.retrieve_all(case.ctl)  # root (this test) takes them: data intact
    assert (await status(case.ctl))["state"] == "normal"


# -- the generated tests ----------------------------------------------------------------------


def test_every_point_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(faults.BY_NAME)


@pytest.mark.parametrize("point", [p.name for p in faults.POINTS])
async def test_fault_point(luod: Running, ctl: TrioClient, point: str) -> None:
    work = await Workload.build(ctl, luod)
    run = SCENARIOS[point]  # a KeyError here: a new point needs a scenario
    await run(Case(point, luod, ctl, work))
    injector = luod.daemon.host.faults
    assert point in {f.point for f in injector.fired}, f"{point} was never hit"
    assert injector.armed == []  # every arm was spent


async def test_every_point_is_reached_by_a_plain_update(luod: Running, ctl: TrioClient) -> None:
    """With nothing armed, one update cycle (and a cancelled one) passes every point: none
    is dead code. Unpreserve, cancel and unfreeze need a cancel or a close to run."""
    work = await Workload.build(ctl, luod)
    await ctl.call("prepare")
    await ctl.call("freeze")
    await ctl.call("cancel")
    await ctl.call("file.unpreserve", {"session": "a", "token": 2})
    del work.data[("a", 2)]
    await work.update_and_verify(ctl, luod)
    reached = luod.daemon.host.faults.reached
    assert [p.name for p in faults.POINTS if not reached[p.name]] == []


async def test_faults_are_refused_unless_enabled(tmp_path: Any) -> None:
    from luod.ipc.async_client import open_client
    from tests.daemon.conftest import running_luod

    async with running_luod(tmp_path) as running, open_client(str(running.path), "t") as c:
        for method, params in (
            ("fault.arm", {"point": "handler.prepare"}),
            ("fault.list", {}),
            ("fault.clear", {}),
        ):
            with pytest.raises(RemoteError) as info:
                await c.call(method, params)
            assert info.value.name == "luod.FaultsDisabled" and info.value.errno == "EPERM"
            assert "--enable-faults" in info.value.message
        assert running.daemon.host.faults.armed == []


async def test_fault_admin_requests(ctl: TrioClient) -> None:
    listing = (await ctl.call("fault.list")).result
    assert listing["enabled"] is True
    assert [p["point"] for p in listing["points"]] == [p.name for p in faults.POINTS]
    assert all(p["description"] and p["consequence"] for p in listing["points"])
    arm = (
        await ctl.call(
            "fault.arm",
            {"point": "handler.retrieve", "count": None, "errno": "EBUSY", "match": "x"},
        )
    ).result
    assert arm == {"point": "handler.retrieve", "count": None, "errno": "EBUSY", "match": "x"}
    for bad, name in (
        ({"point": "no.such"}, "luod.UnknownFaultPoint"),
        ({"point": "handler.prepare", "errno": "EWHATEVER"}, "luod.BadFault"),
        ({"point": "handler.prepare", "count": 0}, "luod.BadFault"),
    ):
        with pytest.raises(RemoteError) as info:
            await ctl.call("fault.arm", bad)
        assert info.value.name == name
    listing = (await ctl.call("fault.list")).result
    (retrieve,) = [p for p in listing["points"] if p["point"] == "handler.retrieve"]
    assert retrieve["after_kexec"] is True and retrieve["armed"] == [arm]
    assert (await ctl.call("fault.clear", {"point": "handler.retrieve"})).result == {"cleared": 1}
    assert (await ctl.call("fault.list")).result["armed"] == []


def test_the_documentation_lists_every_point() -> None:
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "faults.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    documented = [row.split("`")[1] for row in rows]
    assert sorted(documented) == sorted(faults.BY_NAME)
    for row in rows:
        point = faults.BY_NAME[row.split("`")[1]]
        assert row.split("|")[2].strip() == ("after" if point.after_kexec else "before"), row


async def test_a_failing_rollback_step_does_not_hide_the_first_cause(
    luod: Running, ctl: TrioClient
) -> None:
    """`apply` releases everything after a failure, best effort: an unpreserve that fails
    during that rollback neither stops it nor replaces the error."""
    memfd = {"type": "memfd", "size": 8192}
    plan = {
        "session": [
            {
                "name": "p",
                "object": [
                    {"name": "m1", "token": 1, **memfd},
                    {"name": "m2", "token": 2, **memfd},
                ],
            }
        ]
    }
    await ctl.call("fault.arm", {"point": "handler.preserve", "match": "p/2"})
    await ctl.call("fault.arm", {"point": "handler.unpreserve", "match": "p/1"})
    with pytest.raises(RemoteError) as info:
        await ctl.call("apply", {"plan": plan})
    assert "injected fault at handler.preserve (memfd p/0x2)" in info.value.message
    fired = [f.point for f in luod.daemon.host.faults.fired]
    assert fired == ["handler.preserve", "handler.unpreserve"]
    st = await status(ctl)
    assert st["state"] == "normal" and st["sessions"] == []  # released all the same
    assert (await ctl.call("object.list")).result["objects"] == []
