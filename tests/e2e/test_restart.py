"""luod restarting itself keeps the machine; a crash loses it, and says what it lost.

Real processes throughout: the installed luod, luoctl as a subprocess, a participant on the
blocking client (in a thread). A restart (`luoctl daemon restart`, or SIGTERM with
`--restart-keeps-machine`) must bring back every session as incoming with every byte
(sha256) and every participant; a SIGKILL in the middle of an update must leave a luod
that starts, boots cold, and names the phase and every lost session in
`status.last_update`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.ipc.client import Client
from luod.ipc.errors import ConnectionLost, RemoteError

from .conftest import LuodProcess, accepts, start_luod, wait_for

# name -> {token: content}; vm1/2 is empty, vm2/7 mostly holes
CONTENT: dict[str, dict[int, bytes]] = {
    "vm1": {1: os.urandom(300_000), 2: b""},
    "vm2": {7: b"\0" * 65536 + b"guest state" * 100 + b"\0" * 8192},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def populate(luod: LuodProcess) -> None:
    """The sessions of CONTENT (set up through the blocking client: it is faster)."""
    with Client.connect(str(luod.socket), timeout=30, client_name="setup") as client:
        for name, files in CONTENT.items():
            client.call("session.create", {"name": name})
            for token, data in files.items():
                fd = os.memfd_create(f"{name}-{token}")
                try:
                    os.write(fd, data)
                    client.call("memfd.preserve", {"session": name, "token": token}, fds=[fd])
                finally:
                    os.close(fd)


def assert_every_byte_back(luod: LuodProcess) -> None:
    status = luod.json("status")
    assert isinstance(status, dict)
    sessions = {s["name"]: s for s in status["sessions"]}
    assert set(sessions) == set(CONTENT)
    for name, files in CONTENT.items():
        assert sessions[name]["direction"] == "incoming"
        assert {f["token"] for f in sessions[name]["files"]} == set(files)
        luod.luoctl("session", "retrieve", name, check=True)
        for token, data in files.items():
            out = luod.workdir / f"{name}-{token}.out"
            got = luod.json("memfd", "retrieve", name, "--token", str(token), "--output", str(out))
            assert isinstance(got, dict)
            assert got["sha256"] == sha(data) and out.read_bytes() == data
        luod.luoctl("session", "finish", name, check=True)


class Participant:
    """A participant in a thread: acks each phase, unless told to hang or NAK at one."""

    def __init__(self, luod: LuodProcess, *, hang_at: str | None = None, nak: bool = False):
        self.client = Client.connect(str(luod.socket), timeout=30, client_name="vmm")
        self.client.call("participant.register", {"name": "vmm", "sessions": ["vm1"]})
        self.client.call("participant.ready", {})
        self.hang_at, self.nak = hang_at, nak
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.client.events(timeout=60):
                self.seen.append(event.event)
                if event.event in ("prepare", "freeze") and event.event != self.hang_at:
                    params = {"update_id": event.data["update_id"], "phase": event.event}
                    params["ok"] = not self.nak
                    if self.nak:
                        params["reason"] = "not now"
                    self.client.call("participant.ack", params)
        except (ConnectionLost, RemoteError, OSError):
            pass  # dropped at the kexec, or the daemon died

    def close(self) -> None:
        # shutdown (not close) wakes the thread blocked reading the socket
        with contextlib.suppress(OSError):  # the client closed itself at ConnectionLost
            fd = self.client.fileno()
            with socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.client.close()


@pytest.fixture
def state(workdir: Path) -> Path:
    return workdir / "state"


@pytest.fixture
def kept(workdir: Path, state: Path) -> Iterator[LuodProcess]:
    running = start_luod(workdir, "--state-dir", str(state), "--ram", "4G")
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.communicate()


def test_luoctl_daemon_restart_brings_back_every_session_byte_and_participant(
    kept: LuodProcess,
) -> None:
    populate(kept)
    participant = Participant(kept)
    pid = kept.proc.pid
    result = kept.luoctl("daemon", "restart")
    assert result.returncode == 0, result.stdout + result.stderr
    reply = json.loads(result.stdout)
    assert reply["pid"] == pid and sorted(reply["sessions"]) == sorted(CONTENT)
    assert reply["participants"] == ["vmm"]
    participant.close()
    assert participant.seen[-3:] == ["prepare", "freeze", "kexec"]
    # The same process (re-exec'd), serving again on the same socket.
    wait_for(lambda: accepts(kept.socket), "the restarted luod to accept")
    status = kept.json("status")
    assert isinstance(status, dict)
    assert status["daemon"]["pid"] == pid and status["daemon"]["previous_boot_unclean"] is False
    assert status["kernel"]["boot"]["kind"] == "kho"
    assert status["last_update"]["kind"] == "restart"
    assert status["last_update"]["damage"] == []
    assert [(p["name"], p["sessions"], p["state"]) for p in status["participants"]] == [
        ("vmm", ["vm1"], "resuming")
    ]
    with Client.connect(str(kept.socket), timeout=30, client_name="vmm") as again:
        again.call("participant.resumed", {"name": "vmm"})
        status = kept.json("status")
        assert isinstance(status, dict)
        assert status["participants"][0]["state"] == "resumed"
    assert_every_byte_back(kept)
    assert kept.json("status")["state"] == "normal"  # type: ignore[index]
    # and once everything is finished, luod can restart again
    assert kept.luoctl("daemon", "restart").returncode == 0
    wait_for(lambda: accepts(kept.socket), "the second restart")
    code, err = kept.stop()
    assert code == 0, err


def test_a_refused_restart_is_cancelled_and_luod_runs_on(kept: LuodProcess) -> None:
    populate(kept)
    participant = Participant(kept, nak=True)
    result = kept.luoctl("daemon", "restart")
    assert result.returncode == 1, result.stdout
    assert "luod.ParticipantRefused" in result.stdout and "vmm" in result.stdout
    status = kept.json("status")
    assert isinstance(status, dict)
    assert status["state"] == "normal" and status["daemon"]["pid"] == kept.proc.pid
    assert {s["direction"] for s in status["sessions"]} == {"outgoing"}
    assert status["last_cancel"]["error"]["name"] == "luod.ParticipantRefused"
    participant.close()


def test_sigterm_with_restart_keeps_machine_and_the_next_start_boots_from_it(
    workdir: Path, state: Path
) -> None:
    args = ("--state-dir", str(state), "--ram", "4G", "--restart-keeps-machine")
    first = start_luod(workdir, *args)
    populate(first)
    code, err = first.stop()
    assert code == 0, err
    assert (state / "handover.cbor").exists()
    second = start_luod(workdir, *args)
    try:
        assert not (state / "handover.cbor").exists()  # read once
        status = second.json("status")
        assert isinstance(status, dict)
        assert status["kernel"]["boot"]["kind"] == "kho"
        assert status["last_update"]["kind"] == "restart"
        assert_every_byte_back(second)
    finally:
        second.proc.kill()
        second.proc.communicate()
    # That one crashed: the next start is cold, whatever the state dir holds.
    third = start_luod(workdir, *args)
    try:
        status = third.json("status")
        assert isinstance(status, dict)
        assert status["daemon"]["previous_boot_unclean"] is True
        assert status["kernel"]["boot"]["kind"] == "cold" and status["sessions"] == []
    finally:
        third.stop()


def test_restart_keeps_machine_needs_somewhere_to_keep_it(workdir: Path) -> None:
    import subprocess

    from .conftest import LUOD

    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    refused = subprocess.run(
        [LUOD, "--socket", str(workdir / "s"), "--restart-keeps-machine"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert refused.returncode == 2
    assert "--restart-keeps-machine needs --state-dir" in refused.stderr


def blocking(luod: LuodProcess) -> object:
    status = luod.json("status")
    assert isinstance(status, dict)
    return status["blocking"]


def lost_in_crash(luod: LuodProcess, state: Path, phase: str) -> dict[str, object]:
    """SIGKILL luod now; start it again; its crash report."""
    luod.proc.kill()
    luod.proc.communicate()
    again = start_luod(luod.workdir, "--state-dir", str(state), "--ram", "4G")
    try:
        status = again.json("status")
        assert isinstance(status, dict)
        assert status["daemon"]["previous_boot_unclean"] is True
        assert status["kernel"]["boot"]["kind"] == "cold" and status["sessions"] == []
        report = status["last_update"]
        assert report["crashed"] is True and report["died_in"] == phase
        assert sorted(s["name"] for s in report["lost"]) == sorted(CONTENT)
        lost_files = {(s["name"], f["token"]) for s in report["lost"] for f in s["files"]}
        assert lost_files == {(n, t) for n, files in CONTENT.items() for t in files}
        assert sorted(d["session"] for d in report["damage"]) == sorted(CONTENT)
        assert phase in report["boot"]["reason"]
        assert status["kernel"]["boot"]["reason"] == report["boot"]["reason"]
        return report  # type: ignore[no-any-return]
    finally:
        again.stop()


@pytest.mark.parametrize("phase", ["prepare", "freeze"])
def test_sigkill_mid_update_reports_the_phase_and_every_lost_session(
    kept: LuodProcess, state: Path, phase: str
) -> None:
    import subprocess

    from .conftest import LUOCTL

    populate(kept)
    participant = Participant(kept, hang_at=phase)  # the update waits there
    update = subprocess.Popen(
        [LUOCTL, "--socket", str(kept.socket), "--json", "update", "--to", "7.2.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        waiting = [{"name": "vmm", "waiting_for": phase}]
        wait_for(lambda: blocking(kept) == waiting, f"the update to wait at {phase}")
        report = lost_in_crash(kept, state, phase)
        assert (report["from"], report["to"], report["kind"]) == ("7.3.0", "7.2.0", "update")
    finally:
        update.kill()
        update.communicate()
        participant.close()


def test_sigkill_after_the_restart_handover_is_a_crash_in_kexec(
    kept: LuodProcess, state: Path
) -> None:
    populate(kept)
    # A requester that does not hang up holds luod between the handover and the re-exec.
    holder = Client.connect(str(kept.socket), timeout=30, client_name="t")
    holder.call("daemon.restart", {})
    record = json.loads((state / "run.json").read_text())
    assert record["in_flight"]["phase"] == "kexec" and record["in_flight"]["kind"] == "restart"
    report = lost_in_crash(kept, state, "kexec")
    assert report["kind"] == "restart"
    holder.close()


@pytest.mark.parametrize(
    "damage",
    [lambda p: p.mkdir(), lambda p: p.write_text('{"clean": tru')],
    ids=["run.json-a-directory", "run.json-invalid"],
)
def test_a_corrupt_state_dir_is_moved_aside_and_luod_starts(
    workdir: Path, state: Path, damage: object
) -> None:
    state.mkdir()
    damage(state / "run.json")  # type: ignore[operator]
    luod = start_luod(workdir, "--state-dir", str(state))
    try:
        status = luod.json("status")
        assert isinstance(status, dict)
        daemon = status["daemon"]
        assert daemon["previous_boot_unclean"] is True
        [moved] = daemon["state_moved_aside"]
        assert Path(moved["moved_to"]).name.startswith("run.json.corrupt-")
        assert Path(moved["moved_to"]).exists()
        assert json.loads((state / "run.json").read_text())["clean"] is False
    finally:
        code, err = luod.stop()
    assert code == 0, err
    assert "state_file_corrupt" in err
    assert json.loads((state / "run.json").read_text())["clean"] is True


def test_an_unusable_handover_means_a_cold_boot_that_says_why(workdir: Path, state: Path) -> None:
    args = ("--state-dir", str(state), "--ram", "4G", "--restart-keeps-machine")
    first = start_luod(workdir, *args)
    populate(first)
    code, err = first.stop()
    assert code == 0, err
    (state / "handover.cbor").write_bytes(b"\xff not cbor")
    second = start_luod(workdir, *args)
    try:
        status = second.json("status")
        assert isinstance(status, dict)
        assert status["kernel"]["boot"]["kind"] == "cold" and status["sessions"] == []
        assert "unusable" in status["daemon"]["handover_refused"]
        assert status["kernel"]["boot"]["reason"] == status["daemon"]["handover_refused"]
        [moved] = status["daemon"]["state_moved_aside"]
        assert Path(moved["moved_to"]).name.startswith("handover.cbor.corrupt-")
    finally:
        code, err = second.stop()
    assert code == 0, err
    assert "handover_refused" in err
