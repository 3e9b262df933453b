"""CLI.md's exit codes and error documents, against a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import LUOCTL, LuodProcess

OLD_READER = """
release = "6.18.0-old"
summary = "test image: reads every KHO and LUO root but no memfd format"
reads = ["kho-v1", "kho-v2", "luo-v1", "luo-v2"]
[profiles]
current = ["kho-v1", "luo-v1"]
"""


def test_incompatible_target_is_exit_3_and_changes_nothing(luod: LuodProcess) -> None:
    image = luod.workdir / "old.toml"
    image.write_text(OLD_READER)
    (luod.workdir / "data").write_bytes(b"x" * 4096)
    luod.luoctl("session", "create", "vm1", check=True)
    luod.luoctl("memfd", "preserve", "vm1", "--token", "1", "--from", "data", check=True)
    check = luod.luoctl("check", "--to", str(image))
    assert check.returncode == 3
    report = json.loads(check.stdout)
    assert report["compatible"] is False
    assert report["target"] == "6.18.0-old"
    assert report["problems"][0]["session"] == "vm1"
    assert report["problems"][0]["token"] == 1
    assert "memfd" in report["problems"][0]["format"]
    for args in (["update", "--to", str(image)], ["load", str(image)]):
        refused = luod.luoctl(*args)
        assert refused.returncode == 3, refused.stdout
        assert json.loads(refused.stdout)["error"]["name"] == "luod.Incompatible"
    status = luod.json("status")
    assert status["state"] == "normal"  # type: ignore[index]
    assert status["loaded"] is None  # type: ignore[index]
    assert luod.luoctl("file", "unpreserve", "vm1", "--token", "1").returncode == 0


def test_refused_request_is_exit_1_with_one_stderr_line(luod: LuodProcess) -> None:
    luod.luoctl("session", "create", "dup", check=True)
    human = luod.luoctl("session", "create", "dup", json_out=False)
    assert human.returncode == 1
    assert human.stdout == ""
    assert len(human.stderr.strip().splitlines()) == 1
    assert "dup" in human.stderr and "EEXIST" in human.stderr
    scripted = luod.luoctl("session", "create", "dup")
    assert scripted.returncode == 1
    error = json.loads(scripted.stdout)["error"]
    assert error == {
        "name": "luod.SessionExists",
        "errno": "EEXIST",
        "message": error["message"],
        "object": "dup",
    }


def test_usage_error_is_exit_2(luod: LuodProcess) -> None:
    for args in (["memfd", "preserve", "vm1", "--token", "nope"], ["frobnicate"], ["boot"]):
        assert luod.luoctl(*args).returncode == 2, args


def test_unreachable_daemon_is_exit_69(workdir: Path) -> None:
    import subprocess

    gone = workdir / "nobody-here.sock"
    result = subprocess.run(
        [LUOCTL, "--socket", str(gone), "--json", "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 69
    assert str(gone) in json.loads(result.stdout)["error"]["message"]


def test_state_errors_name_the_state(luod: LuodProcess) -> None:
    refused = luod.luoctl("freeze")
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["errno"] == "EINVAL" and "normal" in error["message"]
    assert luod.luoctl("prepare").returncode == 0
    late = luod.luoctl("session", "create", "late")
    assert json.loads(late.stdout)["error"]["errno"] == "EBUSY"
    assert luod.luoctl("cancel").returncode == 0
    assert luod.json("status")["state"] == "normal"  # type: ignore[index]


def test_an_unreadable_fd_is_bad_source_naming_the_file(luod: LuodProcess) -> None:
    import os
    import subprocess

    luod.luoctl("session", "create", "vm1", check=True)
    memfd = os.memfd_create("guest", 0)
    os.write(memfd, b"x" * 4096)
    write_only = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY)  # still a memfd
    try:
        result = subprocess.run(
            [
                *(LUOCTL, "--socket", str(luod.socket), "--json", "memfd", "preserve", "vm1"),
                *("--token", "1", "--fd", str(write_only)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            pass_fds=(write_only,),
        )
    finally:
        os.close(write_only)
        os.close(memfd)
    assert result.returncode == 1, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["name"] == "luod.BadSource" and error["errno"] == "EBADF"
    assert error["object"] == "vm1/0x1"
    assert "not open for reading (write-only, or O_PATH)" in error["message"]
    assert luod.json("session", "show", "vm1")["files"] == []  # type: ignore[index]
