"""`luod-vmm run`: build the guest, preserve it, take part in updates until the kexec.

Owns the lifecycle of one VMM incarnation: build and preserve (`Vmm.build`), register as
participant NAME for session NAME and report ready, print the ready line, then serve the
update barrier (`serve_updates`). It ends in one of three ways: a kexec dropped the
connection (success: the emulated process died with userspace), SIGTERM/SIGINT (close the
session and every object, then success), or a failure (release what was built, then
report). `resume --keep-running` calls `operate` on its own connection to start over.
"""

from __future__ import annotations

from collections.abc import Callable

from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import ConnectionLost
from luod_vmm.build import Vmm
from luod_vmm.errors import VmmError
from luod_vmm.layout import layout_for
from luod_vmm.options import VmmOptions
from luod_vmm.participant import serve_updates
from luod_vmm.signals import Interrupted, until_signal

__all__ = ["operate", "run_vmm"]

Log = Callable[[str], None]


def client_name(name: str) -> str:
    return f"luod-vmm {name}"


async def run_vmm(socket: str, options: VmmOptions, announce: Log, log: Log) -> None:
    """`luod-vmm run`; returns normally on success (kexec or SIGTERM)."""
    async with open_client(socket, client_name(options.name)) as client:
        await operate(client, socket, options, announce, log)


async def operate(
    client: TrioClient, socket: str, options: VmmOptions, announce: Log, log: Log
) -> None:
    """Build, preserve, register and serve on `client` until the kexec or a signal."""
    vmm = Vmm(client, layout_for(options))

    async def lifecycle() -> int:
        await vmm.build()
        name = options.name
        await vmm.call(name, "participant.register", {"name": name, "sessions": [name]})
        await vmm.call(name, "participant.ready", {})
        files = len(vmm.layout.files)
        announce(
            f"{name}: ready: {options.describe()}; session {name} holds {files} files; "
            "waiting for an update"
        )
        return await serve_updates(client, socket, name, log)

    try:
        outcome = await until_signal(lifecycle)
    except ConnectionLost:
        raise
    except Exception:
        await vmm.teardown_quietly()
        raise
    if isinstance(outcome, Interrupted):
        log(f"{outcome.name}: closing session {options.name}")
        try:
            await vmm.teardown()
        except VmmError as exc:
            raise VmmError(f"{outcome.name}: {exc}", exc.code) from None
        return
    log(f"update {outcome} kexec'd: this incarnation of {options.name} ends")
