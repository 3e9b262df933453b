"""Who may call what: the method table's `access` agrees with the CLI contract.

CLI.md, "Who may call what": anyone who can open the socket may run `status`, `kernel
list|show|matrix`, `check`, `events`, `device list`, and everything on their own sessions
(create, preserve, close, retrieve, finish, participant registration for them); admin only:
`load`, `prepare`, `freeze`, `cancel`, `finish` (global), `kexec`, `update`, `boot`,
`kernel write`, `fault`, `daemon restart`. (Carried in the table, not enforced yet.)
"""

from __future__ import annotations

from luoctl.commands import COMMANDS
from luod.ipc.methods import METHODS

# `kho dump` reads the machine as `status` does (CLI.md predates it).
ANYONE = {
    "status",
    "kernel.list",
    "kernel.show",
    "kernel.matrix",
    "check",
    "events",
    "device.list",
    "kho.dump",
}
OWN_SESSIONS = {
    "session.create",
    "session.list",
    "session.show",
    "session.close",
    "session.retrieve",
    "session.finish",
    "memfd.preserve",
    "memfd.retrieve",
    "file.unpreserve",
    "file.retrieve",
    "file.reclaim",
    "apply",
}
ADMIN = {
    "load",
    "prepare",
    "freeze",
    "cancel",
    "finish",
    "kexec",
    "update",
    "boot.cold",
    "kernel.write",
    "fault.list",
    "fault.arm",
    "fault.clear",
    "daemon.restart",
}


def test_every_command_is_in_the_contract_list() -> None:
    assert set(COMMANDS) == ANYONE | OWN_SESSIONS | ADMIN


def test_command_access_agrees_with_the_contract() -> None:
    access = {key: entry.method.access for key, entry in COMMANDS.items()}
    assert {k for k, a in access.items() if a == "anyone"} == ANYONE
    assert {k for k, a in access.items() if a == "owner"} == OWN_SESSIONS
    assert {k for k, a in access.items() if a == "admin"} == ADMIN


def test_participant_methods_are_for_the_owner_of_their_sessions() -> None:
    participant = [s for s in METHODS if s.name.startswith("participant.")]
    assert participant and {s.access for s in participant} == {"owner"}


def test_every_method_carries_its_access_fds_and_waiting() -> None:
    specs = {s.name: s for s in METHODS}
    assert {n for n, s in specs.items() if s.waits} == {"update", "kexec", "daemon.restart"}
    assert {n: s.fds_in for n, s in specs.items() if s.fds_in != (0, 0)} == {
        "memfd.preserve": (1, 1),
        "object.create": (0, 1),
    }
    assert {n for n, s in specs.items() if s.fds_out} == {"memfd.retrieve", "uapi.attach"}
    assert {s.access for s in specs.values()} <= {"anyone", "owner", "admin"}
