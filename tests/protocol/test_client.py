"""The blocking client against a tiny stdlib server thread over a real Unix socket:
hello, calls, errors as values, fds both ways, buffered events, timeouts with late
replies, and the transport errors `luoctl` maps to exit codes."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from luod.ipc.client import Client
from luod.ipc.errors import (
    ConnectionLost,
    DaemonTimeout,
    DaemonUnreachable,
    LocalProtocolError,
    PermissionDenied,
    ProtocolErrorName,
    RemoteError,
    RemoteProtocolError,
    connect_error,
)
from luod.ipc.fdpass import close_fds

from .stdlib_server import StdlibServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StdlibServer]:
    srv = StdlibServer(tmp_path / "luod.sock")
    yield srv
    srv.close()


@pytest.fixture
def client(server: StdlibServer) -> Iterator[Client]:
    with Client.connect(server.path, timeout=5, client_name="test") as c:
        yield c


def test_hello_exchange(client: Client) -> None:
    assert client.server_name == "test-luod" and client.version == 1


def test_call(client: Client) -> None:
    params = {"a": [1, 2.5, None, "x", b"y"], "m": {"k": True}}
    reply = client.call("echo", params)
    assert reply.result == params and reply.fds == ()
    assert client.call("echo").result == {}


def test_remote_error_keeps_connection(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("fail")
    error = info.value
    assert (error.name, error.errno, error.object) == ("luod.SessionExists", "EEXIST", "vm1")
    assert error.method == "fail" and error.request_id is not None
    assert str(error) == "session 'vm1' exists [vm1] (luod.SessionExists, EEXIST)"
    assert "\n" not in str(error)
    with pytest.raises(RemoteError) as unknown:
        client.call("no.such.method")
    assert unknown.value.name == "luod.UnknownMethod"
    assert unknown.value.object == "no.such.method"
    assert client.call("echo", {"still": "alive"}).result == {"still": "alive"}


def test_fds_both_ways(client: Client) -> None:
    fd = os.memfd_create("to-server")
    os.write(fd, b"client data")
    try:
        assert client.call("readfd", fds=[fd]).result == [b"client data"]
    finally:
        os.close(fd)
    reply = client.call("makefd", {"content": b"server data"})
    assert len(reply.fds) == 1
    try:
        assert os.pread(reply.fds[0], 100, 0) == b"server data"
    finally:
        close_fds(reply.fds)


def test_events_between_request_and_reply(client: Client) -> None:
    assert client.call("events", {"n": 3}).result == "done"
    assert client.buffered_events == 3
    events = client.events(timeout=2)
    assert [next(events).data["i"] for _ in range(3)] == [0, 1, 2]
    client.call("events", {"n": 1})
    assert next(events).data == {"i": 0}


def test_event_buffer_drops_oldest(server: StdlibServer) -> None:
    with Client.connect(server.path, timeout=5, event_buffer=2) as c:
        c.call("events", {"n": 5})
        assert c.events_dropped == 3
        events = c.events(timeout=1)
        assert [next(events).data["i"] for _ in range(2)] == [3, 4]


def test_timeout_then_late_reply_dropped(client: Client) -> None:
    """A call that times out leaves the client usable; the late reply (and its fd) is
    dropped when it arrives."""
    with pytest.raises(DaemonTimeout):
        client.call("late", {"delay": 0.3}, timeout=0.05)
    before = set(os.listdir("/proc/self/fd"))
    assert client.call("echo", {"n": 1}).result == {"n": 1}
    assert set(os.listdir("/proc/self/fd")) <= before  # the late reply's fd was closed


def test_events_timeout(client: Client) -> None:
    with pytest.raises(DaemonTimeout):
        next(client.events(timeout=0.05))


def test_daemon_hangs_up(client: Client) -> None:
    with pytest.raises(ConnectionLost):
        client.call("close")
    assert client.closed
    with pytest.raises(ConnectionLost):
        client.call("echo")


def test_daemon_sends_garbage(client: Client) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        client.call("garbage")
    assert info.value.name is ProtocolErrorName.BAD_CBOR
    assert client.closed


def test_connection_level_error(client: Client) -> None:
    with pytest.raises(RemoteError) as info:
        client.call("kick")
    assert info.value.request_id is None and info.value.name == "luod.BadMessage"
    assert client.closed


def test_request_too_large_is_local(server: StdlibServer) -> None:
    with Client.connect(server.path, timeout=5, max_frame=1000) as c:
        with pytest.raises(LocalProtocolError) as info:
            c.call("echo", {"s": "x" * 5000})
        assert info.value.name is ProtocolErrorName.FRAME_TOO_LARGE
        assert c.call("echo", {"ok": 1}).result == {"ok": 1}


def test_version_refused(tmp_path: Path) -> None:
    srv = StdlibServer(tmp_path / "v2.sock", supported_versions=frozenset({2}))
    try:
        with pytest.raises(RemoteError) as info:
            Client.connect(srv.path, timeout=5)
        assert info.value.name == "luod.ProtocolVersion"
        assert info.value.errno == "EPROTONOSUPPORT"
    finally:
        srv.close()


def test_from_socket(server: StdlibServer) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.path))
    with Client.from_socket(sock, client_name="fs", timeout=5) as c:
        assert c.call("echo", {"x": 1}).result == {"x": 1}


class TestUnreachable:
    def test_missing_socket(self, tmp_path: Path) -> None:
        with pytest.raises(DaemonUnreachable) as info:
            Client.connect(tmp_path / "nope.sock", timeout=1)
        assert not isinstance(info.value, PermissionDenied)
        assert info.value.errno == errno.ENOENT and "no luod socket" in str(info.value)

    def test_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "stale.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))  # bound, never listening: connect() gets ECONNREFUSED
        try:
            with pytest.raises(DaemonUnreachable) as info:
                Client.connect(path, timeout=1)
            assert info.value.errno == errno.ECONNREFUSED
        finally:
            stale.close()

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions")
    def test_permission_denied(self, server: StdlibServer) -> None:
        os.chmod(server.path, 0)
        with pytest.raises(PermissionDenied):
            Client.connect(server.path, timeout=1)

    def test_permission_denied_from_connect(
        self, server: StdlibServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """EACCES from connect() (what a non-root user gets) is PermissionDenied."""

        def refuse(_sock: socket.socket, _address: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        with pytest.raises(PermissionDenied) as info:
            Client.connect(server.path, timeout=1)
        assert info.value.errno == errno.EACCES and isinstance(info.value, DaemonUnreachable)

    def test_permission_mapping(self) -> None:
        """EACCES/EPERM map to PermissionDenied (checked without permissions for root)."""
        for code in (errno.EACCES, errno.EPERM):
            exc = connect_error(OSError(code, os.strerror(code)), "/run/luod.sock")
            assert isinstance(exc, PermissionDenied) and isinstance(exc, ConnectionError)
            assert exc.path == "/run/luod.sock"
        other = connect_error(OSError(errno.ENOTDIR, "Not a directory"), "/x")
        assert type(other) is DaemonUnreachable

    def test_hello_timeout(self, tmp_path: Path) -> None:
        """A listener that never answers the hello: DaemonTimeout, not a hang."""
        path = tmp_path / "mute.sock"
        mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mute.bind(str(path))
        mute.listen(1)
        try:
            start = time.monotonic()
            with pytest.raises(DaemonTimeout):
                Client.connect(path, timeout=0.1)
            assert time.monotonic() - start < 2
        finally:
            mute.close()


def test_client_import_is_light() -> None:
    """`luoctl` imports the blocking client on every run: no trio, numpy, structlog, and
    cattrs only once a message is converted."""
    code = (
        "import sys, luod.ipc.client, luod.ipc; "
        "print(sorted(m for m in ('trio', 'numpy', 'structlog', 'cattrs') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
