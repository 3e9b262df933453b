"""The devices' side of `resume`: did each device's DMA go on through the kexec?

Owns the device checks: `device.show` right after retrieval, then again until the write
count has grown (polled with a deadline: luod advances the devices' clock every few ms),
so a device that stopped, faulted or lost its ring is caught.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from luod.ipc.async_client import TrioClient
from luod.ipc.errors import RemoteError
from luod_vmm.layout import DmaWindow
from luod_vmm.report import DeviceCheck

__all__ = ["final_look", "first_look"]

GROW_SECONDS: Final = 5.0
POLL_SECONDS: Final = 0.01


async def _show(client: TrioClient, bdf: str) -> dict[str, Any]:
    result = (await client.call("device.show", {"bdf": bdf})).result
    assert isinstance(result, dict)
    return result


async def first_look(client: TrioClient, windows: Sequence[DmaWindow]) -> dict[str, int]:
    """Each device's write count now (-1 when it cannot be shown)."""
    seen: dict[str, int] = {}
    for window in windows:
        try:
            seen[window.bdf] = int((await _show(client, window.bdf))["dma"]["writes"])
        except RemoteError:
            seen[window.bdf] = -1
    return seen


async def final_look(
    client: TrioClient, windows: Sequence[DmaWindow], before: dict[str, int]
) -> list[DeviceCheck]:
    """Each device's state once its writes have grown past `before` (or the deadline)."""
    checks = []
    for window in windows:
        checks.append(await _final(client, window.bdf, before.get(window.bdf, -1)))
    return checks


async def _final(client: TrioClient, bdf: str, before: int) -> DeviceCheck:
    deadline = time.monotonic() + GROW_SECONDS
    while True:
        try:
            shown = await _show(client, bdf)
        except RemoteError as exc:
            return DeviceCheck(bdf, False, 0, 0, None, None, before, show_error=str(exc))
        dma = shown["dma"]
        check = DeviceCheck(
            bdf,
            bool(dma["running"]),
            int(dma["writes"]),
            int(dma["faults"]),
            dma["ring_ok"],
            dma["ring_consistent"],
            before,
        )
        if check.writes > before or not check.running or time.monotonic() > deadline:
            return check
        await trio.sleep(POLL_SECONDS)
