"""luod.daemon.sdnotify: notify datagrams, the watchdog interval, and inherited listen fds.

The notify tests bind their own `SOCK_DGRAM` receiver (a path under tmp_path, or an abstract
name) and point `$NOTIFY_SOCKET` at it. `listen_fds` reads fds 3.. of the calling process,
so those tests run in a child that dup2()s real listening sockets there: the test process's
own low fds are never touched. The end-to-end test runs the real `systemd-socket-activate`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.daemon import sdnotify

TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts outside systemd, whatever the environment running pytest says."""
    for name in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ):
        monkeypatch.delenv(name, raising=False)


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(TIMEOUT)
    return sock


@pytest.fixture
def path_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound under tmp_path, named by `$NOTIFY_SOCKET`."""
    address = str(tmp_path / "notify")
    with _receiver(address) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        yield sock


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket on a unique abstract name, named `@name` in `$NOTIFY_SOCKET`."""
    name = f"luod-test-notify-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Outside systemd every message returns False and nothing raises."""
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready("up") is False
    assert sdnotify.status("x") is False
    assert sdnotify.stopping() is False
    assert sdnotify.watchdog_ping() is False
    assert sdnotify.extend_timeout(1) is False


def test_ready_with_status_reaches_a_path_socket(path_receiver: socket.socket) -> None:
    assert sdnotify.ready("serving /run/luod/luod.sock") is True
    assert path_receiver.recv(4096) == b"READY=1\nSTATUS=serving /run/luod/luod.sock"


def test_messages_reach_an_abstract_socket(abstract_receiver: socket.socket) -> None:
    """`@name` means the abstract namespace; each call is one datagram."""
    assert sdnotify.ready() is True
    assert sdnotify.status("booting\nkernel 6.19") is True
    assert sdnotify.watchdog_ping() is True
    assert sdnotify.extend_timeout(5_000_000) is True
    assert sdnotify.stopping() is True
    assert sdnotify.notify("STATUS=é", "ERRNO=0") is True
    received = [abstract_receiver.recv(4096) for _ in range(6)]
    assert received == [
        b"READY=1",
        b"STATUS=booting kernel 6.19",  # a newline would start a new field
        b"WATCHDOG=1",
        b"EXTEND_TIMEOUT_USEC=5000000",
        b"STOPPING=1",
        "STATUS=é\nERRNO=0".encode(),
    ]


def test_unencodable_text_is_replaced_not_raised(path_receiver: socket.socket) -> None:
    assert sdnotify.status("bad \udcff byte") is True
    assert path_receiver.recv(4096) == b"STATUS=bad ? byte"


@pytest.mark.parametrize(
    "address", ["/nonexistent/luod-notify", "@luod-test-nobody-listens", "vsock:2:1", "rel"]
)
def test_undeliverable_or_unsupported_address_returns_false(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Send failures are reported, never raised: the daemon must not die for a status line."""
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert sdnotify.ready("up") is False


@pytest.mark.parametrize("fields", [(), ("READY",), ("STATUS=a\nREADY=1",)])
def test_malformed_fields_are_a_caller_error(fields: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="sd_notify"):
        sdnotify.notify(*fields)


def test_extend_timeout_rejects_negative() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        sdnotify.extend_timeout(-1)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "other", None),
        ("1500000", "self", 1.5),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("30000000", "garbage", None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_USEC in seconds; a WATCHDOG_PID naming another process disables it."""
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        value = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
        monkeypatch.setenv("WATCHDOG_PID", value)
    assert sdnotify.watchdog_interval() == expected


def test_listen_fds_is_empty_without_activation() -> None:
    assert sdnotify.listen_fds() == []


# The child puts two real listening sockets on fds 3 and 4, as systemd would, then calls
# listen_fds() under several environments and reports what it saw as JSON.
_LISTEN_FDS_CHILD = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys
    from luod.daemon import sdnotify
    from luod.daemon.listener import from_activation

    directory = sys.argv[1]
    high = []
    for name in ("a.sock", "b.sock"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.path.join(directory, name))
        sock.listen()
        # Park it above 9 first: the new socket itself may have been given fd 3 or 4.
        high.append(fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD, 10))
        sock.close()
    for fd, parked in zip((3, 4), high):
        os.dup2(parked, fd)  # inheritable, like an fd systemd passed
        os.close(parked)

    def run(**env):
        for fd in (3, 4):
            os.set_inheritable(fd, True)
        for key, value in env.items():
            os.environ[key] = value
        try:
            result = sdnotify.listen_fds()
        except ValueError as exc:
            result = "ValueError: " + str(exc)
        left = sorted(k for k in os.environ if k.startswith("LISTEN_"))
        return {
            "result": result,
            "inheritable": [os.get_inheritable(fd) for fd in (3, 4)],
            "env_left": left,
        }

    me = str(os.getpid())
    report = {
        "named": run(LISTEN_PID=me, LISTEN_FDS="2", LISTEN_FDNAMES="control:other"),
        "unnamed": run(LISTEN_PID=me, LISTEN_FDS="2"),
        "other_pid": run(LISTEN_PID=str(os.getppid()), LISTEN_FDS="2"),
        "bad_count": run(LISTEN_PID=me, LISTEN_FDS="two"),
        "name_mismatch": run(LISTEN_PID=me, LISTEN_FDS="2", LISTEN_FDNAMES="control"),
    }
    listener = from_activation([(3, "unknown"), (4, "control")])
    report["chosen"] = [str(listener.path), listener.owned]
    print(json.dumps(report))
    """
)


def test_listen_fds_reads_inherited_fds_in_a_child(tmp_path: Path) -> None:
    """fds from 3 with their names, CLOEXEC set, variables gone; other pids get nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", _LISTEN_FDS_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["named"] == {
        "result": [[3, "control"], [4, "other"]],
        "inheritable": [False, False],
        "env_left": [],
    }
    assert report["unnamed"]["result"] == [[3, "unknown"], [4, "unknown"]]
    # Not for us: nothing returned, fds left inheritable, variables still removed.
    assert report["other_pid"] == {"result": [], "inheritable": [True, True], "env_left": []}
    assert report["bad_count"]["result"].startswith("ValueError: malformed LISTEN_FDS")
    assert report["bad_count"]["env_left"] == []
    assert "does not name 2 fds" in report["name_mismatch"]["result"]
    # from_activation takes the fd named "control" and never owns its file.
    assert report["chosen"] == [str(tmp_path / "b.sock"), False]


# Exec'd by systemd-socket-activate: accept one connection on the inherited socket, echo
# one message, then close the listener (which must leave the socket file in place).
_ACTIVATED_CHILD = textwrap.dedent(
    """
    import sys
    import trio
    from luod.daemon import sdnotify
    from luod.daemon.listener import from_activation

    async def main():
        listener = from_activation(sdnotify.listen_fds())
        assert not listener.owned and str(listener.path) == sys.argv[1], listener
        sdnotify.ready("echoing")
        with trio.fail_after(float(sys.argv[2])):
            async with listener:
                stream = await listener.listener.accept()
                async with stream:
                    await stream.send_all(await stream.receive_some(1024))

    trio.run(main)
    print("done")
    """
)


def _connect_with_deadline(path: Path, deadline: float) -> socket.socket:
    """Connect once the socket exists; poll until `deadline` (no fixed sleep)."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return sock


def test_socket_activation_end_to_end(tmp_path: Path, path_receiver: socket.socket) -> None:
    """systemd-socket-activate -> listen_fds() -> from_activation -> accept and echo."""
    sock_path = tmp_path / "luod.sock"
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock_path),
            "--fdname=control",
            "-E",
            f"NOTIFY_SOCKET={os.environ['NOTIFY_SOCKET']}",
            sys.executable,
            "-c",
            _ACTIVATED_CHILD,
            str(sock_path),
            str(TIMEOUT),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # systemd-socket-activate listens first and execs the child on the first connection.
        with _connect_with_deadline(sock_path, time.monotonic() + TIMEOUT) as client:
            client.settimeout(TIMEOUT)
            client.sendall(b"hello luod")
            assert client.recv(1024) == b"hello luod"
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    assert path_receiver.recv(4096) == b"READY=1\nSTATUS=echoing"
    # The activated listener closed without unlinking: the socket file is systemd's.
    assert sock_path.is_socket()
