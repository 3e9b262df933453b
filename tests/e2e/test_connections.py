"""Connection limits of the installed luod, through luoctl: a refusal is exit 69 with the
named error; running out of fds is one warning line with a count, never a traceback, and
the connections already open are served all along."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.ipc.client import Client
from luod.ipc.errors import RemoteError

from .conftest import LUOD, LuodProcess, accepts, start_luod, wait_for

FD_LIMIT = 48  # luod needs about 15 of its own


def test_a_uid_over_its_cap_gets_exit_69_naming_the_cap(workdir: Path) -> None:
    luod = start_luod(workdir, "--max-connections-per-uid", "1")
    try:
        holder = _connect_when_free(luod.socket)  # the readiness probe's slot frees soon
        with holder:
            refused = luod.luoctl("status")
            assert refused.returncode == 69, refused.stdout + refused.stderr
            error = json.loads(refused.stdout)["error"]
            assert error["name"] == "luod.TooManyConnections" and error["errno"] == "EAGAIN"
            assert "--max-connections-per-uid" in error["message"]
            assert holder.call("status").result["state"] == "normal"
        wait_for(lambda: luod.luoctl("status").returncode == 0, "the slot to free up")
    finally:
        luod.stop()


def _connect_when_free(path: Path) -> Client:
    clients: list[Client] = []

    def connected() -> bool:
        try:
            clients.append(Client.connect(str(path), timeout=10, client_name="holder"))
        except RemoteError:
            return False
        return True

    wait_for(connected, "a free connection slot")
    return clients[0]


@pytest.fixture
def starved(workdir: Path) -> Iterator[tuple[LuodProcess, Path]]:
    """luod with a tiny fd limit and a connection cap above it, so accept hits EMFILE."""
    sock, log = workdir / "luod.sock", workdir / "luod.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                *("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", LUOD, "--socket", str(sock)),
                *("--ram", "1G", "--log-format", "logfmt", "--max-connections", "1000"),
                *("--max-connections-per-uid", "1000"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    luod = LuodProcess(proc, sock, workdir)
    try:
        wait_for(lambda: accepts(sock) or proc.poll() is not None, "luod to accept")
        yield luod, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_out_of_fds_is_one_warning_and_open_connections_are_served(
    starved: tuple[LuodProcess, Path],
) -> None:
    luod, log = starved
    with Client.connect(str(luod.socket), timeout=10, client_name="early") as early:
        early.call("status")  # the first call imports the converter: it needs fds too
        idle = []
        try:
            for _ in range(FD_LIMIT + 20):  # more than luod can accept: the rest wait
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(luod.socket))
                idle.append(sock)
            wait_for(lambda: b"accept_failing" in log.read_bytes(), "the EMFILE warning")
            status = early.call("status").result
            assert status["daemon"]["connections"]["accept_failures"] > 0
        finally:
            for sock in idle:
                sock.close()
        # The idle ones gone, luod accepts again, luoctl included.
        wait_for(lambda: luod.luoctl("status").returncode == 0, "luod to accept again")
    text = log.read_text()
    assert "Traceback" not in text and "trio.serve_listeners" not in text
    warnings = [line for line in text.splitlines() if "accept_failing" in line]
    assert 1 <= len(warnings) <= 2, warnings  # rate limited: one per 5 s at most
    assert "errno=EMFILE" in warnings[0] and "failures=" in warnings[0]
    luod.proc.terminate()
    assert luod.proc.wait(timeout=30) == 0
    assert not os.path.exists(luod.socket)
