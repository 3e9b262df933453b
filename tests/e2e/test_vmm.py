"""The example VMM end to end: real `luod`, real `luod-vmm` processes, `luoctl update`.

For each page size a guest is built, preserved and kept doing DMA through an update; after
the kexec `luod-vmm resume` must verify every byte and see DMA land during the blackout.
The negative control (iommufd page tables not preserved) must fail to verify. Cancels in
the middle (a participant's NAK, a device with interrupts on at freeze) leave the VMM
running with its DMA going, and a later update still verifies. Waits poll with deadlines.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from luod.ipc.client import Client

from .conftest import BIN, LUOCTL, LuodProcess, start_luod, wait_for

VMM = str(BIN / "luod-vmm")
TARGET = "7.1.0"  # boots this release and updates into it: it reads every device format
DEVICE = "0000:01:00.0"


@attrs.define
class VmmProcess:
    proc: subprocess.Popen[bytes]
    name: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def exited(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)


@attrs.define
class Machine:
    """One luod and the VMMs started against it; everything is stopped at the end."""

    workdir: Path
    luod: LuodProcess | None = None
    vmms: list[VmmProcess] = attrs.Factory(list)

    def boot(self, *args: str, env: dict[str, str] | None = None) -> LuodProcess:
        self.luod = start_luod(
            self.workdir, "--kernel", TARGET, "--hugetlb", "2M=64,1G=4", *args, env=env
        )
        return self.luod

    @property
    def daemon(self) -> LuodProcess:
        assert self.luod is not None
        return self.luod

    def vmm(self, *args: str) -> list[str]:
        return [VMM, "--socket", str(self.daemon.socket), *args]

    def run(self, name: str, *args: str) -> VmmProcess:
        """`luod-vmm run NAME ...` in the background, once it is a ready participant."""
        log = self.workdir / f"{name}-{len(self.vmms)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self.vmm("run", name, *args),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        vmm = VmmProcess(proc, name, log)
        self.vmms.append(vmm)
        self.wait_ready(vmm)
        return vmm

    def wait_ready(self, vmm: VmmProcess) -> None:
        def ready() -> bool:
            assert vmm.proc.poll() is None, f"luod-vmm exited early: {vmm.output()}"
            return self.participant_state(vmm.name) == "ready"

        wait_for(ready, f"participant {vmm.name} to be ready")

    def participant_state(self, name: str) -> str | None:
        status = self.daemon.json("status")
        assert isinstance(status, dict)
        states = [p["state"] for p in status["participants"] if p["name"] == name]
        return states[0] if states else None

    def resume(self, name: str, *args: str) -> tuple[int, dict[str, Any]]:
        result = subprocess.run(
            self.vmm("resume", name, "--json", *args),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        report = json.loads(result.stdout)
        assert isinstance(report, dict), result.stdout
        return result.returncode, report

    def update(self) -> subprocess.CompletedProcess[str]:
        return self.daemon.luoctl("update", "--to", TARGET)

    def client(self) -> Client:
        return Client.connect(self.daemon.socket, timeout=30, client_name="test_vmm")

    def stop(self) -> None:
        for vmm in self.vmms:
            if vmm.proc.poll() is None:
                vmm.proc.kill()
                vmm.proc.wait()
        if self.luod is not None and self.luod.proc.poll() is None:
            self.luod.proc.kill()
            self.luod.proc.communicate()


@pytest.fixture
def machine(workdir: Path) -> Iterator[Machine]:
    running = Machine(workdir)
    yield running
    running.stop()


def assert_verified(code: int, report: dict[str, Any], memory: int) -> None:
    assert code == 0, report["problems"]
    assert report["verified"] is True
    assert report["dma_writes_during_blackout"] > 0
    assert report["dma_faults"] == 0
    assert report["dma_writes"] > report["dma_writes_during_blackout"]
    assert report["bytes_checked"] >= memory
    assert report["finished"] and report["resumed"]


def update_and_resume(machine: Machine, vmm: VmmProcess, memory: int) -> dict[str, Any]:
    result = machine.update()
    assert result.returncode == 0, result.stdout + result.stderr
    assert vmm.exited() == 0, vmm.output()
    code, report = machine.resume(vmm.name)
    assert_verified(code, report, memory)
    return report


@pytest.mark.parametrize(
    ("page_size", "memory", "extra"),
    [
        ("4K", "64M", ["--guest-memfd"]),
        ("2M", "64M", ["--vfio", "2"]),
        ("1G", "2G", ["--sparse"]),
    ],
)
def test_guest_survives_update(
    machine: Machine, page_size: str, memory: str, extra: list[str]
) -> None:
    machine.boot()
    vmm = machine.run("vm1", "--memory", memory, "--page-size", page_size, *extra)
    assert "ready" in vmm.output()
    size = {"64M": 64 << 20, "2G": 2 << 30}[memory]
    report = update_and_resume(machine, vmm, size)
    assert report["options"]["page_size"] == {"4K": 4096, "2M": 2 << 20, "1G": 1 << 30}[page_size]
    assert len(report["devices"]) == (2 if "--vfio" in extra else 1)
    if "--sparse" in extra:
        assert report["ram"]["bytes_read"] == size // 512  # holes were not read
    if "--guest-memfd" in extra:
        assert report["guest_memfd"]["ok"] is True
    status = machine.daemon.json("status")
    assert isinstance(status, dict)
    assert status["state"] == "normal"
    assert status["last_update"]["full_blackout_ms"] >= status["last_update"]["blackout_ms"]


def test_keep_running_loops_update_and_resume(machine: Machine) -> None:
    machine.boot()
    vmm = machine.run("soak", "--memory", "16M", "--sparse")
    assert machine.update().returncode == 0
    assert vmm.exited() == 0
    log = machine.workdir / "soak-keep.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            machine.vmm("resume", "soak", "--keep-running"), stdout=out, stderr=subprocess.STDOUT
        )
    again = VmmProcess(proc, "soak", log)
    machine.vmms.append(again)
    machine.wait_ready(again)
    assert "verified" in again.output()
    update_and_resume(machine, again, 16 << 20)


def test_without_iommu_tables_resume_fails(machine: Machine) -> None:
    machine.boot(env={"LUOD_TEST_SKIP_IOMMU_TABLES": "1"})
    vmm = machine.run("vm1", "--memory", "16M")
    assert machine.update().returncode == 0
    assert vmm.exited() == 0
    code, report = machine.resume("vm1")
    assert code != 0
    assert report["verified"] is False
    problems = " ".join(report["problems"])
    assert report["dma_faults"] > 0 or "file.retrieve iommu" in problems, problems


def dma_writes(client: Client, bdf: str = DEVICE) -> tuple[int, int]:
    dma = client.call("device.show", {"bdf": bdf}).result["dma"]
    return dma["writes"], dma["faults"]


def assert_dma_goes_on(machine: Machine, since: int) -> None:
    """The device kept writing, and without a fault."""
    with machine.client() as client:
        wait_for(lambda: dma_writes(client)[0] > since, "DMA writes to grow")
        assert dma_writes(client)[1] == 0


def test_nak_cancels_update_and_vmm_keeps_running(machine: Machine) -> None:
    machine.boot()
    vmm = machine.run("vm1", "--memory", "16M")
    with machine.client() as naysayer:
        naysayer.call("participant.register", {"name": "naysayer", "sessions": []})
        naysayer.call("participant.ready", {})
        before = dma_writes(naysayer)[0]
        update = subprocess.Popen(
            [LUOCTL, "--socket", str(machine.daemon.socket), "--json", "update", "--to", TARGET],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for event in naysayer.events(timeout=30):
            if event.event == "prepare":
                naysayer.call(
                    "participant.ack",
                    {"update_id": event.data["update_id"], "phase": "prepare", "ok": False},
                )
                break
        out, _ = update.communicate(timeout=30)
        assert update.returncode == 1, out
        assert "naysayer" in json.loads(out)["error"]["message"]
    assert vmm.proc.poll() is None, "the VMM keeps running after a cancel"
    assert_dma_goes_on(machine, before)
    wait_for(lambda: "cancel" in vmm.output(), "the VMM to log the cancel")
    wait_for(lambda: machine.participant_state("naysayer") is None, "the naysayer to go")
    update_and_resume(machine, vmm, 16 << 20)


def test_interrupts_on_fail_freeze_and_vmm_keeps_running(machine: Machine) -> None:
    machine.boot()
    vmm = machine.run("vm1", "--memory", "16M")
    with machine.client() as client:
        client.call("device.set", {"bdf": DEVICE, "irq": True})
        before = dma_writes(client)[0]
    result = machine.update()
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["errno"] == "EINVAL"
    assert DEVICE in error["message"]
    assert vmm.proc.poll() is None, "the VMM keeps running after a cancel"
    assert_dma_goes_on(machine, before)
    assert machine.participant_state("vm1") == "ready"
    with machine.client() as client:
        client.call("device.set", {"bdf": DEVICE, "irq": False})
    update_and_resume(machine, vmm, 16 << 20)


def test_sigterm_closes_the_session(machine: Machine) -> None:
    machine.boot()
    vmm = machine.run("vm1", "--memory", "16M")
    vmm.proc.terminate()
    assert vmm.exited() == 0, vmm.output()
    status = machine.daemon.json("status")
    assert isinstance(status, dict)
    assert status["sessions"] == []
    assert status["participants"] == []
    with machine.client() as client:  # closing the vfio-pci object stopped its DMA
        assert client.call("object.list").result["objects"] == []
    # the name is free again
    machine.run("vm1", "--memory", "16M")


def test_daemon_errors_are_one_line(machine: Machine) -> None:
    machine.boot("--pci", "1")
    result = subprocess.run(
        machine.vmm("run", "vm1", "--memory", "16M", "--vfio", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "0000:01:00.1" in lines[0], result.stderr
    status = machine.daemon.json("status")
    assert isinstance(status, dict)
    assert status["sessions"] == [], "a failed run releases what it built"
    code, report = machine.resume("nothing")
    assert code == 1 and report["verified"] is False
    assert "nothing" in report["problems"][0]
