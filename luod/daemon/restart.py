"""luod restarting itself without losing the machine: a kexec into the same release whose
next kernel boots in the next luod process.

`hand_over` runs in the old process, as an update would: prepare and freeze, each with the
participants' barrier (a NAK, a timeout or a disconnect cancels the restart, and the
machine keeps running, exactly as a cancelled update), then the kexec's first half: KHO is
finalized and its root's address goes into the handover register; userspace dies. What
luod itself must remember (the participants, the restart's timings) goes into the handover
as bytes (CBOR, `machine_store.HANDOVER_FORMAT`) next to the machine's registers: no
Python object reaches the next process. `resume` runs in the new process once its kernel
has booted from that handover: the record of the restart becomes `last_update` (kind
`restart`), the participants are back as `resuming`, and clients reconnect and retrieve
their sessions as after any update.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import cbor2
import structlog
import trio

from luod.daemon.core import Daemon
from luod.daemon.errors import DaemonError
from luod.daemon.machine_store import HANDOVER_FORMAT
from luod.daemon.orchestrator import DEFAULT_DEADLINE
from luod.daemon.owners import RESERVED_PREFIX
from luod.daemon.participants import Participant

log = structlog.get_logger("luod.restart")

REPLY_GRACE_SECONDS = 5.0  # how long `daemon restart`'s reply may take to leave


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


async def hand_over(daemon: Daemon, requester: object = None) -> bytes:
    """Serialize the machine for the next luod process; returns the handover's bytes.

    Raises:
        DaemonError: `UpdateInProgress` (EBUSY) while an update runs or the state is not
            normal; whatever failed during prepare or freeze (the restart is cancelled).
    """
    orch = daemon.orchestrator
    host = daemon.host
    if orch.lock.locked():
        raise DaemonError("UpdateInProgress", "an update is running", errno=errno.EBUSY)
    async with orch.lock:
        kernel = host.kernel
        if kernel.state != "normal":
            raise DaemonError(
                "UpdateInProgress",
                f"luod can restart only in state normal, not {kernel.state} "
                "(finish or cancel the update first)",
                errno=errno.EBUSY,
                obj="daemon",
            )
        update_id = next(orch.ids)
        release = kernel.release
        phases: dict[str, float] = {}
        previous_loaded = kernel.loaded
        kernel.loaded = kernel.image  # the same release: nothing to negotiate
        daemon.bus.publish("update.started", update_id=update_id, target=release, restart=True)
        try:
            t = time.perf_counter()
            daemon.record_phase("prepare", update_id, release, kind="restart")
            host.prepare()
            await orch.roster.wait_for_all(update_id, "prepare", DEFAULT_DEADLINE)
            phases["prepare"] = _ms(t)
            orch.clock.tick()
            dma_at_freeze = orch.clock.writes()
            t = freeze_at = time.perf_counter()
            daemon.record_phase("freeze", update_id, release, kind="restart")
            await orch.roster.wait_for_all(update_id, "freeze", DEFAULT_DEADLINE)
            orch.before_freeze()
            kernel.freeze()
            orch.clock.tick()
            phases["freeze"] = _ms(t)
            daemon.record_phase("kexec", update_id, release, kind="restart")
            host.faults.hit("update.kexec-start", release)
        except BaseException as exc:
            kernel.loaded = previous_loaded
            orch.cancelled(update_id, release, exc)
            raise
        # The point of no return, as for a kexec.
        handed_over = sorted(host.luo.outgoing)
        participants = [
            {"name": p.name, "uid": p.uid, "sessions": list(p.sessions)}
            for p in orch.participants.values()
        ]
        orch.roster.tell("kexec", update_id=update_id, target=release)
        daemon.bus.publish("kexec", update_id=update_id, target=release, restart=True)
        daemon.userspace_dies(requester)
        t = time.perf_counter()
        kernel.hand_over()
        phases["kexec"] = _ms(t)
        machine = host.machine
        log.info("restart_handed_over", update_id=update_id, sessions=len(handed_over))
        return cbor2.dumps(
            {
                "format": HANDOVER_FORMAT,
                "ram_bytes": machine.memory.size_bytes,
                "registers": machine.registers(),
                "release": release,
                "update_id": update_id,
                "phases": phases,
                "freeze_at": freeze_at,  # perf_counter: CLOCK_MONOTONIC, machine-wide
                "dma_at_freeze": dma_at_freeze,
                "handed_over": handed_over,
                "participants": participants,
                "pid": os.getpid(),
            }
        )


def resume(daemon: Daemon, blob: dict[str, Any], restore_ms: float) -> dict[str, Any]:
    """In the new process, its kernel booted from `blob`'s handover: the restart's record
    (`last_update`), and the participants it waits for. Call from within the trio run."""
    orch = daemon.orchestrator
    update_id = int(blob["update_id"])
    orch.ids = itertools.count(update_id + 1)
    resuming = [
        Participant(str(p["name"]), int(p["uid"]), list(p["sessions"]), None, state="resuming")
        for p in blob["participants"]
    ]
    phases = {**blob["phases"], "restore": restore_ms}
    record = orch.booted(
        update_id,
        phases,
        str(blob["release"]),
        float(blob["freeze_at"]),
        list(blob["handed_over"]),
        resuming,
        orch.clock.writes_since(dict(blob["dma_at_freeze"])),
        kind="restart",
        previous_pid=blob.get("pid"),
    )
    log.info(
        "restart_resumed",
        update_id=update_id,
        boot=record["boot"]["kind"],
        sessions=len(daemon.host.sessions()),
        participants=[p.name for p in resuming],
    )
    return record


@attrs.define
class Stop:
    """How this run ends: `how` is "stop" (the machine is lost), "exit" (the machine waits
    in the fd store or state dir for the next start) or "exec" (luod re-execs itself)."""

    how: str
    signal: str | None = None
    blob: bytes | None = None
    update_id: int | None = None
    code: int = 0  # the exit status, for "stop" and "exit"


async def wait_for_stop(
    daemon: Daemon, signals: AsyncIterator[int], *, keep_on_sigterm: bool
) -> Stop:
    """Until a signal or `luoctl daemon restart`. SIGTERM with `keep_on_sigterm`
    (`--restart-keeps-machine`) hands the machine over first; if that is refused, the
    refusal is logged and luod runs on (the next SIGTERM tries again; SIGINT stops)."""
    async with trio.open_nursery() as nursery:
        stop: list[Stop] = []

        async def requested() -> None:
            await daemon.restart_requested.wait()
            assert daemon.restart_blob is not None
            blob = daemon.restart_blob
            stop.append(Stop("exec", blob=blob, update_id=cbor2.loads(blob)["update_id"]))
            nursery.cancel_scope.cancel()

        nursery.start_soon(requested)
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGTERM and keep_on_sigterm:
                try:
                    blob = await hand_over(daemon)
                except Exception as exc:
                    log.error("restart_refused", signal=name, error=str(exc))
                    continue
                update_id = cbor2.loads(blob)["update_id"]
                stop.append(Stop("exit", signal=name, blob=blob, update_id=update_id))
            else:
                stop.append(Stop("stop", signal=name))
            break
        nursery.cancel_scope.cancel()
    result = stop[0]
    if result.how == "exec" and daemon.restart_requester is not None:
        # Let the reply reach `luoctl daemon restart` before the process goes.
        await daemon.wait_closed(daemon.restart_requester, REPLY_GRACE_SECONDS)
    return result


def summary(blob: bytes) -> dict[str, Any]:
    """What `daemon restart` answers: the handover's headline, from its bytes."""
    info = cbor2.loads(blob)
    return {
        "update_id": info["update_id"],
        "release": info["release"],
        "sessions": [s for s in info["handed_over"] if not s.startswith(RESERVED_PREFIX)],
        "participants": [p["name"] for p in info["participants"]],
        "phases": info["phases"],
        "pid": info["pid"],
    }
