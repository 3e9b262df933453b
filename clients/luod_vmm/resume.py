"""`luod-vmm resume NAME`: take the guest back after the kexec and prove it survived.

Owns the resume sequence: register again as participant NAME (as the protocol asks of a
participant after a kexec); retrieve session NAME; read the config memfd (the last token)
to learn the run's options, hence the whole layout; retrieve every file in token order;
reclaim the iommufd; verify guest RAM (and the guest_memfd) byte for byte; check that each
device's DMA went on without faults; read the DMA writes during the blackout from luod's
last update record; finish the session; report `participant.resumed`. A refusal at any step
is recorded as a problem and the steps that can still run do (so a report says everything
that is wrong); `ResumeReport.verified` is the verdict.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from luod.ipc.async_client import TrioClient
from luod.ipc.errors import RemoteError
from luod_vmm.devices import final_look, first_look
from luod_vmm.errors import VmmError
from luod_vmm.layout import Layout, layout_for
from luod_vmm.options import ConfigError, VmmOptions
from luod_vmm.pattern import PagePattern, gmem_pattern, ram_pattern
from luod_vmm.report import ResumeReport
from luod_vmm.verify import MemoryCheck, verify_memfd

__all__ = ["resume_vmm"]

T = TypeVar("T")
CONFIG_MAX = 1 << 16


async def resume_vmm(client: TrioClient, name: str) -> ResumeReport:
    """Run the resume sequence on `client`; never raises for a refused step."""
    report = ResumeReport(name)
    started = time.perf_counter()
    try:
        await _resume(client, report)
    except VmmError as exc:
        report.problem(str(exc))
    report.timings_ms["total"] = _ms(started)
    if report.verified:
        report.resumed = (
            await _attempt(
                report, "participant.resumed", client.call("participant.resumed", {"name": name})
            )
            is not None
        )
    return report


async def _attempt(report: ResumeReport, what: str, call: Awaitable[T]) -> T | None:
    try:
        return await call
    except RemoteError as exc:
        report.problem(f"{what}: {exc}")
        return None


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


async def _resume(client: TrioClient, report: ResumeReport) -> None:
    name = report.name
    t = time.perf_counter()
    try:
        # Protocol: a participant reconnects and registers again before it retrieves. The
        # session is incoming now, so the registration lists no outgoing session.
        await client.call("participant.register", {"name": name, "sessions": []})
    except RemoteError as exc:
        raise VmmError(f"participant.register {name}: {exc}") from None
    try:
        session = (await client.call("session.retrieve", {"name": name})).result
    except RemoteError as exc:
        raise VmmError(f"session.retrieve {name}: {exc}") from None
    listed = {int(f["token"]): str(f["type"]) for f in session["files"]}
    if not listed:
        raise VmmError(f"session {name} holds no files")
    options = await _read_config(client, name, max(listed), listed[max(listed)])
    report.options = options
    layout = layout_for(options)
    _check_listing(report, layout, listed)
    for plan in layout.objects:
        await _attempt(
            report,
            f"file.retrieve {plan.key} (token {plan.token})",
            client.call("file.retrieve", {"session": name, "token": plan.token}),
        )
    iommu = layout.file("iommu").token
    await _attempt(
        report,
        f"file.reclaim iommu (token {iommu})",
        client.call("file.reclaim", {"session": name, "token": iommu}),
    )
    report.timings_ms["retrieve"] = _ms(t)
    before = await first_look(client, layout.dma)
    t = time.perf_counter()
    report.ram = await _verify(client, report, layout, "ram", ram_pattern(options))
    if options.guest_memfd:
        report.gmem = await _verify(client, report, layout, "gmem", gmem_pattern(options))
    report.timings_ms["verify"] = _ms(t)
    report.devices = await final_look(client, layout.dma, before)
    for device in report.devices:
        if device.problem is not None:
            report.problem(device.problem)
    await _read_update(client, report, layout)
    finished = await _attempt(
        report, f"session.finish {name}", client.call("session.finish", {"name": name})
    )
    report.finished = finished is not None


async def _read_config(client: TrioClient, name: str, token: int, file_type: str) -> VmmOptions:
    if file_type != "memfd":
        raise VmmError(f"session {name}: the last token {token} is a {file_type}, not the config")
    try:
        reply = await client.call("memfd.retrieve", {"session": name, "token": token})
    except RemoteError as exc:
        raise VmmError(f"memfd.retrieve config (token {token}): {exc}") from None
    fd = reply.fds[0]
    try:
        raw = os.pread(fd, CONFIG_MAX, 0)
    finally:
        for extra in reply.fds:
            os.close(extra)
    try:
        options = VmmOptions.from_config(raw)
    except ConfigError as exc:
        raise VmmError(f"session {name}: config (token {token}): {exc}") from None
    if options.name != name:
        raise VmmError(f"session {name} holds the config of VMM {options.name!r}")
    return options


def _check_listing(report: ResumeReport, layout: Layout, listed: dict[int, str]) -> None:
    expected = {f.token: f.file_type for f in layout.files}
    if listed != expected:
        report.problem(
            f"session {report.name} lists files {sorted(listed.items())}, "
            f"expected {sorted(expected.items())}"
        )


async def _verify(
    client: TrioClient, report: ResumeReport, layout: Layout, key: str, pattern: PagePattern
) -> MemoryCheck | None:
    plan = layout.file(key)
    assert plan.spec is not None
    size = plan.spec["size"]
    assert isinstance(size, int)
    reply = await _attempt(
        report,
        f"memfd.retrieve {key} (token {plan.token})",
        client.call("memfd.retrieve", {"session": report.name, "token": plan.token}),
    )
    if reply is None:
        return None
    try:
        got = int(reply.result["size"])
        if got != size:
            report.problem(f"{key}: retrieved {got} bytes, expected {size}")
        check = verify_memfd(reply.fds[0], size, pattern)
    finally:
        for fd in reply.fds:
            os.close(fd)
    problem = check.problem(key)
    if problem is not None:
        report.problem(problem)
    return check


async def _read_update(client: TrioClient, report: ResumeReport, layout: Layout) -> None:
    status = await _attempt(report, "status", client.call("status"))
    if status is None:
        return
    last: Any = status.result.get("last_update")
    if not isinstance(last, dict):
        report.problem("luod has no record of the last update")
        return
    during = last.get("dma_writes_during_blackout") or {}
    report.dma_writes_during_blackout = sum(int(during.get(w.bdf, 0)) for w in layout.dma)
    report.update = {
        key: last.get(key) for key in ("update_id", "from", "to", "blackout_ms", "phases")
    }
