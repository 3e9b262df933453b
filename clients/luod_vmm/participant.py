"""Taking part in updates: answer the barrier, ride out cancels, recognise the kexec.

Owns the participant's event loop. `prepare` and `freeze` are acknowledged at once (the
example guest has nothing to quiesce: its devices keep doing DMA through the blackout,
which is the point), `cancel` means everything is usable again and the VMM keeps running.
A kexec ends userspace: luod drops the connection. The loop returns the id of the update
that did so: after a `kexec` event, or, when the connection drops while an update is past
its freeze acknowledgement, once luod's `status` confirms that update kexec'd (luod may
drop the connection without delivering the `kexec` event first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import trio

from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import ConnectionLost, DaemonUnreachable, RemoteError
from luod.ipc.messages import Event
from luod_vmm.errors import VmmError

__all__ = ["serve_updates"]

CONFIRM_SECONDS: Final = 30.0
CONFIRM_POLL: Final = 0.05

Log = Callable[[str], None]


async def serve_updates(client: TrioClient, socket: str, name: str, log: Log) -> int:
    """Serve events until a kexec drops the connection; return that update's id.

    Raises:
        VmmError: the connection ended for any other reason.
    """
    in_update: int | None = None  # the update whose freeze we acknowledged
    try:
        async for event in client.events():
            # Noted before acknowledging: the kexec may drop us before the ack's reply.
            if event.event == "freeze":
                in_update = event.data.get("update_id")
            elif event.event == "cancel":
                in_update = None
            kexec_of = await _handle(client, event, log)
            if kexec_of is not None:
                in_update = kexec_of
    except ConnectionLost as exc:
        if in_update is None:
            raise VmmError(f"lost the connection to luod outside an update: {exc}") from None
        await _confirm_kexec(socket, name, in_update)
        return in_update
    raise VmmError("the connection to luod was closed")


async def _handle(client: TrioClient, event: Event, log: Log) -> int | None:
    """React to one event; return the update id if it announces the kexec."""
    data: dict[str, Any] = event.data
    if event.event in ("prepare", "freeze"):
        update_id = data.get("update_id")
        try:
            await client.call(
                "participant.ack", {"update_id": update_id, "phase": event.event, "ok": True}
            )
        except RemoteError as exc:  # e.g. the deadline passed: luod cancels the update
            log(f"{event.event} of update {update_id}: ack refused: {exc}")
            return None
        log(f"{event.event} of update {update_id}: acknowledged")
    elif event.event == "cancel":
        log(f"update cancelled ({data.get('reason', 'no reason given')}): keep running")
    elif event.event == "kexec":
        update_id = data.get("update_id")
        log(f"kexec of update {update_id}: userspace ends")
        return update_id if isinstance(update_id, int) else None
    return None


async def _confirm_kexec(socket: str, name: str, update_id: int) -> None:
    """The connection dropped after we acknowledged freeze: was it the kexec?"""
    deadline = time.monotonic() + CONFIRM_SECONDS
    last: object = None
    while time.monotonic() < deadline:
        try:
            async with open_client(socket, f"luod-vmm {name} (kexec check)") as control:
                status = (await control.call("status")).result
        except (DaemonUnreachable, ConnectionLost) as exc:
            raise VmmError(
                f"lost the connection to luod during update {update_id}, and luod is gone: {exc}"
            ) from None
        last = status.get("last_update") if isinstance(status, dict) else None
        if isinstance(last, dict) and last.get("update_id") == update_id:
            return
        await trio.sleep(CONFIRM_POLL)
    raise VmmError(
        f"lost the connection to luod during update {update_id}, which did not kexec "
        f"(last update: {last!r})"
    )
