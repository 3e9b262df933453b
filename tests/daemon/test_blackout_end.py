"""The blackout ends when the next kernel serves: emulating what the devices wrote in it
comes after (luod.daemon.clock), so its cost is not in `blackout_ms`; and no automatic
garbage collection runs inside it (luod.daemon.heap)."""

from __future__ import annotations

import gc
import time
import types

import pytest

from luod.daemon import orchestrator as orchestrator_module
from luod.ipc.async_client import open_client

from .conftest import Running, preserve_memfd

CATCH_UP_SECONDS = 10.0  # what the devices' catch-up "costs" here, on perf_counter


async def test_the_dma_catch_up_after_the_kexec_is_outside_the_blackout(
    luod: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    skew = [0.0]
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + skew[0], time=time.time
    )
    monkeypatch.setattr(orchestrator_module, "time", fake_time)
    orch = luod.daemon.orchestrator
    real_resume = orch.clock.resume

    def costly_resume(until_ns: int | None = None) -> None:
        if until_ns is not None:  # the one after the kexec, up to the blackout's end
            skew[0] += CATCH_UP_SECONDS
        real_resume(until_ns)

    monkeypatch.setattr(orch.clock, "resume", costly_resume)
    async with open_client(str(luod.path), "luoctl") as ctl:
        await ctl.call("session.create", {"name": "vm1"})
        await preserve_memfd(ctl, "vm1", 1, b"guest" * 100)
        result = (await ctl.call("update", {"target": "7.2.0"})).result
    assert skew[0] == CATCH_UP_SECONDS, "the catch-up ran once"
    assert 0 < result["blackout_ms"] < CATCH_UP_SECONDS * 1000
    assert result["full_blackout_ms"] == result["blackout_ms"]  # no participant to wait for


async def test_no_automatic_collection_runs_inside_the_blackout(luod: Running) -> None:
    """With thresholds that make every few allocations collect, collections still run
    during the update, and none while the blackout lasts (the clock is deferred exactly
    then); the collector is on again afterwards."""
    orch = luod.daemon.orchestrator
    seen: list[bool] = []

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(orch.clock.deferred)

    thresholds = gc.get_threshold()
    async with open_client(str(luod.path), "luoctl") as ctl:
        await ctl.call("session.create", {"name": "vm1"})
        await preserve_memfd(ctl, "vm1", 1, b"guest" * 100)
        gc.callbacks.append(on_collection)
        gc.set_threshold(5, 1, 1)
        try:
            await ctl.call("update", {"target": "7.2.0"})
        finally:
            gc.set_threshold(*thresholds)
            gc.callbacks.remove(on_collection)
    assert seen.count(False) > 10, "collections ran around the blackout"
    assert True not in seen, "a collection ran inside the blackout"
    assert gc.isenabled()
