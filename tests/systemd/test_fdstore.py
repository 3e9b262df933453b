"""The machine kept in systemd's fd store across a luod restart, with systemd emulated.

Without PID 1 systemd, the test plays its part of the protocol: a `$NOTIFY_SOCKET` receiver
that keeps every fd sent with `FDSTORE=1` under its `FDNAME=` (and drops it at
`FDSTOREREMOVE=1`), and, for the next start, a luod launched with those fds from 3 on in
`$LISTEN_FDS` / `$LISTEN_FDNAMES` and `$LISTEN_PID` set to its own pid, as systemd does.
No state dir: the fd store is the only place the machine can survive.
"""

from __future__ import annotations

import array
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.ipc.client import Client
from tests.e2e.conftest import LUOD, accepts, wait_for

TIMEOUT = 30.0
DATA = os.urandom(200_000) + b"\0" * 100_000 + b"end"

# Puts the fds named on the command line at 3, 4, ... and execs luod with LISTEN_* set, as
# systemd's service manager does after fork.
_SHIM = """
import fcntl, os, sys
n = int(sys.argv[1]); fds = [int(x) for x in sys.argv[2:2 + n]]; names = sys.argv[2 + n]
parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for i, fd in enumerate(parked):
    os.dup2(fd, 3 + i)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(n), LISTEN_FDNAMES=names)
os.execv(sys.argv[3 + n], sys.argv[3 + n:])
"""


class FakeSystemd:
    """The notify socket's receiving end, with an fd store."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(TIMEOUT)
        self.path = path
        self.store: dict[str, int] = {}
        self.messages: list[dict[str, str]] = []

    def receive(self) -> dict[str, str]:
        fds = array.array("i")
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        if fields.get("FDSTORE") == "1":
            [fd] = fds
            old = self.store.pop(fields["FDNAME"], None)
            if old is not None:
                os.close(old)
            self.store[fields["FDNAME"]] = fd
        else:
            for fd in fds:
                os.close(fd)
        if fields.get("FDSTOREREMOVE") == "1" and fields["FDNAME"] in self.store:
            os.close(self.store.pop(fields["FDNAME"]))  # (an unknown name: ignored)
        self.messages.append(fields)
        return fields

    def until(self, key: str) -> None:
        while key not in self.receive():
            pass

    def drain(self) -> None:
        self.sock.settimeout(0)
        try:
            while True:
                self.receive()
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(TIMEOUT)

    def start(self, sock: Path, *args: str) -> subprocess.Popen[bytes]:
        """luod as this service manager starts it: with the fd store in $LISTEN_FDS."""
        names = list(self.store)
        fds = [self.store[n] for n in names]
        argv = [LUOD, "--socket", str(sock), "--log-format", "logfmt", "--ram", "2G", *args]
        if fds:
            argv = [sys.executable, "-c", _SHIM, str(len(fds)), *map(str, fds), ":".join(names),
                    *argv]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG"))}
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**env, "NOTIFY_SOCKET": str(self.path)},
            pass_fds=fds,
        )
        wait_for(lambda: accepts(sock) or proc.poll() is not None, "luod to accept")
        assert proc.poll() is None, proc.communicate()[1].decode()
        return proc

    def close(self) -> None:
        for fd in self.store.values():
            os.close(fd)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    yield fake
    fake.close()


def test_sigterm_keeps_the_machine_in_the_fd_store_and_the_next_start_takes_it(
    systemd: FakeSystemd, tmp_path: Path
) -> None:
    sock = tmp_path / "luod.sock"
    first = systemd.start(sock, "--restart-keeps-machine")
    procs = [first]
    try:
        systemd.until("READY")
        assert set(systemd.store) == {"luod-ram"}  # pushed at start: a restart finds it
        with Client.connect(str(sock), timeout=TIMEOUT, client_name="t") as client:
            client.call("session.create", {"name": "vm1"})
            fd = os.memfd_create("guest")
            os.write(fd, DATA)
            client.call("memfd.preserve", {"session": "vm1", "token": 3}, fds=[fd])
            os.close(fd)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=TIMEOUT)
        assert first.returncode == 0, err.decode()
        systemd.drain()
        assert set(systemd.store) == {"luod-ram", "luod-handover"}

        second = systemd.start(sock, "--restart-keeps-machine")
        procs.append(second)
        systemd.until("READY")
        # The handover is read once: the new luod took it out of the store.
        assert {"FDSTOREREMOVE": "1", "FDNAME": "luod-handover"} in systemd.messages
        assert set(systemd.store) == {"luod-ram"}
        with Client.connect(str(sock), timeout=TIMEOUT, client_name="t") as client:
            status = client.call("status").result
            assert status["kernel"]["boot"]["kind"] == "kho"
            assert status["last_update"]["kind"] == "restart"
            assert [(s["name"], s["direction"]) for s in status["sessions"]] == [
                ("vm1", "incoming")
            ]
            client.call("session.retrieve", {"name": "vm1"})
            reply = client.call("memfd.retrieve", {"session": "vm1", "token": 3})
            [out] = reply.fds
            with os.fdopen(out, "rb") as f:
                got = f.read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(DATA).digest()
        second.send_signal(signal.SIGINT)  # a plain stop: the machine is not kept
        _, err = second.communicate(timeout=TIMEOUT)
        assert second.returncode == 0, err.decode()
        systemd.drain()
        assert "luod-handover" not in systemd.store
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
