"""Who may drive the machine (CLI.md "Who may call what"), through the real socket and the
real luoctl, run as `nobody`: every machine-wide command is exit 77 and changes nothing;
with `luod --admin-group` naming nobody's group, the same commands work."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from luoctl.commands import COMMANDS

from .conftest import LuodProcess, start_luod

pytestmark = pytest.mark.usefixtures("traversable_venv")

# One command line per admin command of luoctl, in an order that works for an admin from
# a prepared machine (see test_an_admin_group_member_may_drive_the_machine).
ADMIN_ARGV: dict[str, list[str]] = {
    "cancel": ["cancel"],
    "kernel.write": ["kernel", "write", "memfd-v2", "on"],
    "load": ["load", "7.2.0"],
    "prepare": ["prepare"],
    "freeze": ["freeze"],
    "kexec": ["kexec"],
    "finish": ["finish"],
    "update": ["update", "--to", "7.3.0"],
    "boot.cold": ["boot", "--cold"],
    "fault.list": ["fault", "list"],
    "fault.arm": ["fault", "arm", "handler.prepare"],
    "fault.clear": ["fault", "clear", "handler.prepare"],
}
UNCHANGED = ("state", "kernel", "loaded", "sessions", "last_update", "last_cancel")


def test_every_admin_command_is_covered() -> None:
    admin = {key for key, entry in COMMANDS.items() if entry.method.access == "admin"}
    assert admin == set(ADMIN_ARGV)


def _open_to_all(luod: LuodProcess) -> LuodProcess:
    os.chmod(luod.socket, 0o666)  # the socket lets nobody in: luod itself must decide
    return luod


@pytest.fixture
def prepared(workdir: Path) -> Iterator[LuodProcess]:
    """A machine in PREPARED with root's session holding a memfd, 7.2.0 loaded."""
    luod = _open_to_all(start_luod(workdir, "--enable-faults"))
    (luod.workdir / "data").write_bytes(b"x" * 8192)
    luod.luoctl("session", "create", "vm1", check=True)
    luod.luoctl("memfd", "preserve", "vm1", "--token", "1", "--from", "data", check=True)
    luod.luoctl("load", "7.2.0", check=True)
    luod.luoctl("prepare", check=True)
    yield luod
    luod.stop()


def _snapshot(luod: LuodProcess) -> dict[str, object]:
    status = luod.json("status")
    assert isinstance(status, dict)
    return {key: status[key] for key in UNCHANGED}


def test_nobody_gets_77_for_every_machine_wide_command_and_changes_nothing(
    prepared: LuodProcess,
) -> None:
    before = _snapshot(prepared)
    assert before["state"] == "prepared" and before["loaded"] == "7.2.0"
    for key, argv in ADMIN_ARGV.items():
        run = prepared.luoctl(*argv, user="nobody")
        assert run.returncode == 77, (argv, run.stdout, run.stderr)
        error = json.loads(run.stdout)["error"]
        assert error["name"] == "luod.NotPermitted" and error["errno"] == "EPERM", argv
        assert error["object"] == COMMANDS[key].method.name
        assert "uid 65534 is none of them" in error["message"], error
        assert _snapshot(prepared) == before, argv
    human = prepared.luoctl("kexec", json_out=False, user="nobody")
    assert human.returncode == 77 and human.stdout == ""
    assert human.stderr == "luoctl: kexec needs root; uid 65534 is none of them (EPERM)\n"
    # What stays open to all still works for nobody, and says what nobody may do.
    status = json.loads(prepared.luoctl("status", user="nobody", check=True).stdout)
    assert status["sessions"] == []  # root's session is not nobody's business
    assert status["access"] == {
        "uid": 65534,
        "admin": False,
        "reason": "uid 65534 is not root",
        "daemon_uid": 0,
        "admin_group": None,
    }
    for argv in (
        ["kernel", "list"],
        ["kernel", "matrix"],
        ["device", "list"],
        ["check", "--to", "7.2.0"],
    ):
        assert prepared.luoctl(*argv, user="nobody").returncode in (0, 3), argv
    line = prepared.luoctl("status", json_out=False, user="nobody", check=True).stdout
    access = [text for text in line.splitlines() if text.startswith("access:")]
    assert access == [
        "access:      your own sessions only, not the machine (uid 65534 is not root)"
    ]
    assert _snapshot(prepared) == before


def test_an_admin_group_member_may_drive_the_machine(workdir: Path) -> None:
    luod = _open_to_all(start_luod(workdir, "--enable-faults", "--admin-group", "nogroup"))
    try:
        status = json.loads(luod.luoctl("status", user="nobody", check=True).stdout)
        assert status["access"]["admin"] is True
        assert status["access"]["admin_group"] == "nogroup"
        assert "in group nogroup" in status["access"]["reason"]
        luod.luoctl("session", "create", "vm1", check=True, user="nobody")
        luod.luoctl("prepare", check=True)  # root prepares; nobody takes over from there
        for key, argv in ADMIN_ARGV.items():
            luod.luoctl(*argv, check=True, user="nobody")
            if key == "kexec":
                after = luod.json("status")
                assert after["kernel"]["release"] == "7.2.0"  # type: ignore[index]
                assert after["state"] == "updated"  # type: ignore[index]
        final = luod.json("status")
        assert final["kernel"]["boot"]["kind"] == "cold"  # type: ignore[index]
    finally:
        luod.stop()
