"""Format compatibility through `luoctl` against a real daemon: an upgrade that works, one
that is refused (exit 3, nothing changed), a rollback that works while the operator keeps
the old formats writable and is refused once they are switched off, the matrix, and what
`kexec --force` into a kernel that cannot read the handover really does."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import LuodProcess, start_luod

DATA = os.urandom(3 << 20)

# Test images that cannot read one layer of what 7.0.0 (kho-v1, luo-v1, memfd-v2) or
# 7.3.0 (kho-v2, luo-v2, memfd-v3) writes. Each still boots: it writes what it reads.
BLIND = {
    "no-kho": ("kho-v2", "luo-v1", "memfd-v2"),  # 7.0.0's KHO root is kho-v1
    "no-luo": ("kho-v1", "luo-v2", "memfd-v2"),  # 7.0.0's LUO root is luo-v1
    "no-memfd": ("kho-v1", "luo-v1"),  # 7.0.0's memfd record is memfd-v2
    "no-luo-2026": ("kho-v2", "luo-v1", "memfd-v3"),  # 7.3.0's LUO root is luo-v2
}


def image_file(workdir: Path, name: str) -> Path:
    formats = ", ".join(f'"{c}"' for c in BLIND[name])
    path = workdir / f"{name}.toml"
    path.write_text(
        f'release = "9.9.9-{name}"\nsummary = "cannot read one layer"\n'
        f"reads = [{formats}]\n[profiles]\ncurrent = [{formats}]\n"
    )
    return path


@pytest.fixture
def running(workdir: Path, request: pytest.FixtureRequest) -> Iterator[LuodProcess]:
    luod = start_luod(workdir, "--kernel", request.param)
    yield luod
    if luod.proc.poll() is None:
        luod.proc.kill()
        luod.proc.communicate()


def on(*releases: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("running", releases, indirect=True)


def preserve(luod: LuodProcess, session: str = "vm1") -> None:
    (luod.workdir / "guest.img").write_bytes(DATA)
    luod.luoctl("session", "create", session, check=True)
    args = ["memfd", "preserve", session, "--token", "1", "--from", "guest.img"]
    luod.luoctl(*args, "--seal", "grow", check=True)


def retrieved(luod: LuodProcess, session: str = "vm1") -> dict[str, Any]:
    luod.luoctl("session", "retrieve", session, check=True)
    out = luod.workdir / "restored.img"
    doc = luod.json("memfd", "retrieve", session, "--token", "1", "--output", str(out))
    assert isinstance(doc, dict)
    return doc


def status(luod: LuodProcess) -> dict[str, Any]:
    doc = luod.json("status")
    assert isinstance(doc, dict)
    return doc


def refused_with_3(luod: LuodProcess, *args: str) -> dict[str, Any]:
    result = luod.luoctl(*args)
    assert result.returncode == 3, (args, result.stdout, result.stderr)
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


@on("6.19.0")
def test_upgrade_carries_the_bytes(running: LuodProcess) -> None:
    preserve(running)
    report = running.json("check", "--to", "7.2.0")
    assert isinstance(report, dict) and report["compatible"] is True
    assert report["objects"] == [
        {"session": "vm1", "token": 1, "type": "memfd", "format": "memfd-v1", "reason": None}
    ]
    running.luoctl("update", "--to", "7.2.0", check=True)
    doc = retrieved(running)
    assert doc["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert doc["seals"] == []  # memfd-v1 carries no seals
    assert status(running)["kernel"]["release"] == "7.2.0"


@on("6.19.0")
def test_skipping_the_hop_is_refused_and_changes_nothing(running: LuodProcess) -> None:
    preserve(running)
    report = refused_with_3(running, "check", "--to", "7.3.0")
    assert report["compatible"] is False
    formats = {(p["format"], p["session"]) for p in report["problems"]}
    assert formats == {("kho", None), ("memfd", "vm1")}
    for args in (["update", "--to", "7.3.0"], ["load", "7.3.0"]):
        error = refused_with_3(running, *args)["error"]
        assert error["name"] == "luod.Incompatible" and "7.3.0" in error["message"]
    doc = status(running)
    assert (doc["state"], doc["loaded"], doc["kernel"]["release"]) == ("normal", None, "6.19.0")
    # everything is still usable: the hop through 7.2.0 works
    running.luoctl("update", "--to", "7.2.0", check=True)
    running.luoctl("session", "retrieve", "vm1", check=True)
    running.luoctl("session", "finish", "vm1", check=True)
    preserve(running, "vm2")
    running.luoctl("update", "--to", "7.3.0", check=True)
    doc2 = retrieved(running, "vm2")
    assert doc2["sha256"] == hashlib.sha256(DATA).hexdigest() and doc2["seals"] == ["grow"]


@on("7.2.0")
def test_rollback_needs_the_previous_formats_writable(running: LuodProcess) -> None:
    preserve(running)
    report = running.json("check", "--to", "7.1.0")
    assert isinstance(report, dict) and report["compatible"] is True
    running.luoctl("kernel", "write", "luo-v1", "off", check=True)
    report = refused_with_3(running, "check", "--to", "7.1.0")
    assert [(p["format"], p["session"]) for p in report["problems"]] == [("luo", None)]
    assert "luo-v2" in report["problems"][0]["reason"]
    refused_with_3(running, "update", "--to", "7.1.0")
    assert status(running)["state"] == "normal"
    running.luoctl("kernel", "write", "luo-v1", "on", check=True)
    update = running.json("update", "--to", "7.1.0")
    assert isinstance(update, dict) and update["to"] == "7.1.0"
    doc = retrieved(running)
    assert doc["sha256"] == hashlib.sha256(DATA).hexdigest() and doc["seals"] == ["grow"]


@on("7.3.0")
def test_matrix_names_the_paths(running: LuodProcess) -> None:
    extra = image_file(running.workdir, "no-memfd")
    doc = running.json("kernel", "matrix", str(extra))
    assert isinstance(doc, dict)
    assert doc["releases"] == ["6.19.0", "7.0.0", "7.1.0", "7.2.0", "7.3.0", "9.9.9-no-memfd"]
    pairs = {(p["from"], p["to"]): p for p in doc["pairs"]}
    assert len(pairs) == 36
    assert pairs[("6.19.0", "7.2.0")]["compatible"] is True
    assert pairs[("6.19.0", "7.3.0")]["refused"] == ["kho", "memfd"]
    assert pairs[("7.3.0", "7.2.0")]["types"]["memfd"]["format"] == "memfd-v2"
    assert pairs[("7.3.0", "7.3.0")]["types"]["memfd"]["format"] == "memfd-v3"
    assert pairs[("7.2.0", "9.9.9-no-memfd")]["refused"][0] == "memfd"
    assert pairs[("6.19.0", "6.19.0")]["types"]["iommufd"]["writes"] is False
    human = running.luoctl("kernel", "matrix", json_out=False)
    assert human.returncode == 0 and human.stderr == ""
    lines = human.stdout.splitlines()
    grid = {line.split()[0]: line.split()[1:] for line in lines[3:8]}
    assert grid["6.19.0"] == ["yes", "yes", "yes", "yes", "no"]
    assert grid["7.3.0"] == ["no", "no", "no", "yes", "yes"]
    assert grid["7.1.0"][:2] == ["part", "part"]  # memfds can roll back, devices cannot


def forced_into(luod: LuodProcess, name: str) -> dict[str, Any]:
    preserve(luod)
    luod.luoctl("prepare", check=True)
    luod.luoctl("freeze", check=True)
    target = str(image_file(luod.workdir, name))
    error = refused_with_3(luod, "kexec", "--to", target)["error"]
    assert error["name"] == "luod.Incompatible"
    assert status(luod)["state"] == "frozen"
    result = luod.json("kexec", "--to", target, "--force")
    assert isinstance(result, dict)
    return result


@on("7.0.0")
def test_forced_past_an_unreadable_kho_root_boots_cold(running: LuodProcess) -> None:
    result = forced_into(running, "no-kho")
    assert result["boot"]["kind"] == "cold" and "kho-v1" in result["boot"]["reason"]
    doc = status(running)
    assert doc["state"] == "normal" and doc["sessions"] == []
    assert doc["kernel"]["boot"]["kind"] == "cold"
    lost = running.luoctl("session", "retrieve", "vm1")
    assert lost.returncode == 1 and json.loads(lost.stdout)["error"]["errno"] == "ENOENT"


@pytest.mark.parametrize(
    ("running", "blind", "root"),
    [
        ("7.0.0", "no-luo", "luo-v1"),
        ("7.3.0", "no-luo-2026", "luo-v2"),
    ],
    indirect=["running"],
)
def test_forced_past_an_unreadable_luo_root_panics(
    running: LuodProcess, blind: str, root: str
) -> None:
    forced_into(running, blind)
    doc = status(running)
    assert doc["state"] == "panicked"
    assert root in doc["kernel"]["panic"]
    dead = running.luoctl("session", "create", "again")
    assert dead.returncode == 1
    running.luoctl("boot", "--cold", check=True)
    doc = status(running)
    assert doc["state"] == "normal" and doc["kernel"]["panic"] is None
    running.luoctl("session", "create", "again", check=True)


@on("7.0.0")
def test_forced_past_an_unknown_memfd_format_fails_every_open(running: LuodProcess) -> None:
    forced_into(running, "no-memfd")
    doc = status(running)
    assert "memfd-v2" in doc["device_error"]
    for args in (
        ["session", "retrieve", "vm1"],
        ["memfd", "retrieve", "vm1", "--token", "1", "--output", "x"],
        ["session", "list"],
    ):
        result = running.luoctl(*args)
        if args[1] == "list":  # a listing shows nothing rather than failing
            assert result.returncode == 0
            continue
        assert result.returncode == 1, args
        error = json.loads(result.stdout)["error"]
        assert error["errno"] == "EIO" and "memfd-v2" in error["message"], args
