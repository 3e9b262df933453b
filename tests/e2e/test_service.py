"""The daemon as a service: socket activation, sd_notify, refusal to start twice, clean
shutdown, run records, and a foreign uid refused."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from luod.ipc.client import Client

from .conftest import LUOD, LuodProcess, accepts, start_luod, wait_for


def test_socket_activation_and_notify(workdir: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(workdir / "notify"))
    notify.settimeout(30)
    sock = workdir / "activated.sock"
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            "--fdname=control",
            "-E",
            f"NOTIFY_SOCKET={workdir / 'notify'}",
            LUOD,
            "--log-format",
            "logfmt",
            "--ram",
            "1G",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: accepts(sock), "systemd-socket-activate to listen")
        with Client.connect(str(sock), timeout=30, client_name="t") as client:
            assert client.call("status").result["state"] == "normal"
        messages: list[bytes] = []
        while not any(m.startswith(b"READY=1") for m in messages):
            messages.append(notify.recv(4096))
        ready = next(m for m in messages if m.startswith(b"READY=1"))
        assert b"STATUS=running" in ready
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()
        assert f"socket={sock}".encode() in err
        while not any(m.startswith(b"STOPPING=1") for m in messages):
            messages.append(notify.recv(4096))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    assert sock.exists(), "an activated socket belongs to systemd: luod leaves it"


def test_status_lines_during_an_update(workdir: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(workdir / "notify"))
    notify.settimeout(30)
    luod = start_luod(workdir, env={"NOTIFY_SOCKET": str(workdir / "notify")})
    try:
        assert luod.luoctl("update", "--to", "7.2.0").returncode == 0
        seen = b""
        while b"running 7.2.0" not in seen or b"freeze" not in seen:
            seen += notify.recv(4096) + b"\n"
        assert b"STATUS=update 1: prepare" in seen
    finally:
        luod.stop()
        notify.close()


def test_second_daemon_refuses_and_first_survives(luod: LuodProcess) -> None:
    second = subprocess.run(
        [LUOD, "--socket", str(luod.socket), "--log-format", "logfmt", "--ram", "1G"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert f"another luod is already serving {luod.socket}" in second.stderr
    assert accepts(luod.socket)


def test_sigterm_removes_socket_and_records_clean_stop(workdir: Path) -> None:
    state = workdir / "state"
    luod = start_luod(workdir, "--state-dir", str(state))
    assert oct(luod.socket.stat().st_mode & 0o777) == oct(0o660)
    code, err = luod.stop()
    assert code == 0, err
    assert not luod.socket.exists()
    again = start_luod(workdir, "--state-dir", str(state))
    try:
        status = again.json("status")
        assert status["daemon"]["previous_boot_unclean"] is False  # type: ignore[index]
        again.proc.kill()  # a crash: the next start must say so
        again.proc.communicate()
        third = start_luod(workdir, "--state-dir", str(state))
        status = third.json("status")
        assert status["daemon"]["previous_boot_unclean"] is True  # type: ignore[index]
        assert status["kernel"]["boot"]["kind"] == "cold"  # type: ignore[index]
        third.stop()
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


@pytest.mark.usefixtures("traversable_venv")
def test_other_uid_is_refused(luod: LuodProcess) -> None:
    luod.luoctl("session", "create", "vm1", check=True)
    denied = luod.luoctl("session", "close", "vm1", user="nobody")
    assert denied.returncode == 77, denied.stdout + denied.stderr  # the socket is 0660 root
    os.chmod(luod.socket, 0o666)  # now let nobody in: the session itself must refuse
    denied = luod.luoctl("session", "close", "vm1", user="nobody")
    assert denied.returncode == 77, denied.stdout + denied.stderr
    assert "luod.NotOwner" in denied.stdout
    assert luod.luoctl("session", "show", "vm1").returncode == 0  # untouched


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_every_clean_exit_removes_the_socket_even_after_a_chmod(
    workdir: Path, signum: signal.Signals
) -> None:
    luod = start_luod(workdir)
    os.chmod(luod.socket, 0o666)  # an operator opening it up must not make luod leave it
    luod.proc.send_signal(signum)
    luod.proc.send_signal(signum)  # impatient: a second one must not cut the cleanup short
    _, err = luod.proc.communicate(timeout=30)
    assert luod.proc.returncode == 0, err.decode()
    assert not luod.socket.exists()


def test_a_crashed_daemons_socket_is_replaced_only_when_nobody_listens(workdir: Path) -> None:
    crashed = start_luod(workdir)
    crashed.proc.kill()
    crashed.proc.communicate()
    assert crashed.socket.exists()  # a crash leaves the file; nobody listens on it
    again = start_luod(workdir)
    try:
        assert again.json("status")["state"] == "normal"  # type: ignore[index]
    finally:
        again.stop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(str(crashed.socket))
        squatter.listen()
        refused = subprocess.run(
            [LUOD, "--socket", str(crashed.socket), "--log-format", "logfmt", "--ram", "1G"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode == 1
        assert f"another luod is already serving {crashed.socket}" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert crashed.socket.exists()  # not ours: left alone
