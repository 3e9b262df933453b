"""What a newcomer needs to find out without guessing, through a real daemon and luoctl:
the machine's devices and pools, the KHO blob as `dtc` reads it, and errors that say what
is true."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from .conftest import LUOCTL, LuodProcess
from .test_plans import plan


def test_device_list_names_every_device_its_holder_and_the_pools(luod: LuodProcess) -> None:
    listed = luod.json("device", "list")
    devices = listed["devices"]  # type: ignore[index]
    assert [d["bdf"] for d in devices] == [f"0000:01:00.{i}" for i in range(8)]
    assert all(d["held_by"] is None and d["power"] == "D0" for d in devices)
    assert {p["page_size"] for p in listed["hugetlb"]} == {2 << 20, 1 << 30}  # type: ignore[index]
    assert luod.json("status")["machine"]["pci_devices"] == 8  # type: ignore[index]

    (luod.workdir / "plan.toml").write_text(plan(["ram", "iommu", "nic"]))
    luod.json("apply", "plan.toml")
    held = luod.json("device", "list")["devices"][0]  # type: ignore[index]
    assert held["held_by"] == {"session": "vm1", "direction": "outgoing", "token": 3}
    human = luod.luoctl("device", "list", json_out=False, check=True).stdout
    assert human.splitlines()[0].split() == ["BDF", "POWER", "IRQ", "DMA", "HELD", "BY"]
    assert "0000:01:00.0" in human and "vm1/3" in human and "HUGETLB" in human
    status = luod.luoctl("status", json_out=False, check=True).stdout
    assert "8 PCI devices" in status


def test_a_bdf_that_does_not_exist_is_answered_with_the_ones_that_do(
    luod: LuodProcess,
) -> None:
    text = plan(["ram", "iommu", "nic"]).replace("0000:01:00.0", "0000:09:00.0")
    (luod.workdir / "plan.toml").write_text(text)
    refused = luod.luoctl("apply", "plan.toml")
    assert refused.returncode == 1
    message = json.loads(refused.stdout)["error"]["message"]
    assert "0000:09:00.0" in message
    assert "0000:01:00.0" in message and "0000:01:00.7" in message


def test_kho_dump_before_freeze_frozen_and_after_the_kexec(luod: LuodProcess) -> None:
    cold = luod.luoctl("kho", "dump")
    assert cold.returncode == 1
    error = json.loads(cold.stdout)["error"]
    assert error["name"] == "luod.NoHandover" and error["errno"] == "ENOENT"
    assert "freeze" in error["message"] and "booted cold" in error["message"]

    (luod.workdir / "data").write_bytes(b"x" * 8192)
    luod.luoctl("session", "create", "vm1", check=True)
    luod.luoctl("memfd", "preserve", "vm1", "--token", "1", "--from", "data", check=True)
    luod.luoctl("load", "7.3.0", check=True)
    luod.luoctl("prepare", check=True)
    luod.luoctl("freeze", check=True)
    out = luod.json("kho", "dump", "--output", "out.dtb")
    assert out["source"] == "outgoing" and out["compatible"] == "kho-v2"  # type: ignore[index]
    blob = (luod.workdir / "out.dtb").read_bytes()
    assert blob[:4] == bytes.fromhex("d00dfeed") and len(blob) == out["size"]  # type: ignore[index]
    assert hashlib.sha256(blob).hexdigest() == out["sha256"]  # type: ignore[index]
    luod.luoctl("kexec", check=True)

    incoming = luod.json("kho", "dump", "--incoming")
    assert incoming["source"] == "incoming"  # type: ignore[index]
    assert incoming["sha256"] == out["sha256"]  # type: ignore[index]  # the same bytes came in
    piped = subprocess.run(
        [LUOCTL, "--socket", str(luod.socket), "kho", "dump"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert piped.stdout == blob  # not a terminal: the raw blob, nothing else
    if shutil.which("dtc") is None:
        pytest.fail("dtc is missing: `make tools` installs it")
    source = subprocess.run(
        ["dtc", "-I", "dtb", "-O", "dts"], input=piped.stdout, capture_output=True, check=True
    ).stdout.decode()
    assert 'compatible = "kho-v2"' in source and "LUO {" in source


def test_session_errors_say_what_is_true(luod: LuodProcess) -> None:
    missing = luod.luoctl("session", "show", "nosuch")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["message"] == "no session 'nosuch'"
    luod.luoctl("session", "create", "s1", check=True)
    wrong_way = luod.luoctl("session", "retrieve", "s1")
    assert wrong_way.returncode == 1
    error = json.loads(wrong_way.stdout)["error"]
    assert error["name"] == "luod.NoSuchSession" and error["object"] == "s1"
    assert error["message"] == (
        "s1 is outgoing; only sessions from the previous kernel can be retrieved or finished"
    )


def test_a_callers_mistake_is_logged_at_info_without_a_traceback(luod: LuodProcess) -> None:
    assert luod.luoctl("kernel", "show", "9.9").returncode == 1
    luod.luoctl("status", check=True)
    code, log = luod.stop()
    assert code == 0
    refused = [line for line in log.splitlines() if "event=request_refused" in line]
    assert len(refused) == 1, log
    assert "level=info" in refused[0] and "method=kernel.show" in refused[0]
    assert "level=error" not in log and "Traceback" not in log
