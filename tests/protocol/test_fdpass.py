"""SCM_RIGHTS and SO_PEERCRED over a real `socketpair(AF_UNIX)`: a memfd crosses and is
read back, received fds are close-on-exec, truncated ancillary data closes what arrived
and fails, and a whole protocol request carries its fd through `Connection`."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from luod.ipc.connection import Connection
from luod.ipc.errors import ProtocolErrorName, RemoteProtocolError
from luod.ipc.fdpass import (
    close_fds,
    peer_credentials,
    recv_with_fds,
    send_with_fds,
)
from luod.ipc.messages import MAX_FDS_PER_MESSAGE, Hello, Request, Welcome
from luod.ipc.state import Role

from .helpers import cbor_frame


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def memfd(content: bytes) -> int:
    fd = os.memfd_create("luod-test")
    os.write(fd, content)
    return fd


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_memfd_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fd = memfd(b"preserved bytes")
    try:
        send_with_fds(a, b"x", [fd])
    finally:
        os.close(fd)
    data, fds = recv_with_fds(b, 100, maxfds=4)
    try:
        assert data == b"x" and len(fds) == 1
        assert os.pread(fds[0], 100, 0) == b"preserved bytes"
        assert fcntl.fcntl(fds[0], fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        close_fds(fds)


def test_several_fds_keep_their_order(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    mine = [memfd(bytes([i])) for i in range(5)]
    send_with_fds(a, b"xyz", mine)
    close_fds(mine)
    data, fds = recv_with_fds(b, 100)
    assert data == b"xyz"
    assert [os.pread(fd, 1, 0) for fd in fds] == [bytes([i]) for i in range(5)]
    close_fds(fds)


def test_ctrunc_closes_and_fails(pair: tuple[socket.socket, socket.socket]) -> None:
    """More fds than the receiver allows: the kernel truncates (MSG_CTRUNC); every fd that
    did arrive is closed and the read fails with `luod.MissingFds`."""
    a, b = pair
    mine = [memfd(b"") for _ in range(4)]
    send_with_fds(a, b"x", mine)
    close_fds(mine)
    before = open_fds()
    with pytest.raises(RemoteProtocolError) as info:
        recv_with_fds(b, 100, maxfds=1)
    assert info.value.name is ProtocolErrorName.MISSING_FDS
    assert open_fds() <= before  # nothing leaked


def test_fds_need_data_and_a_bound(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    with pytest.raises(ValueError, match="data byte"):
        send_with_fds(a, b"", [0])
    with pytest.raises(ValueError, match="at most"):
        send_with_fds(a, b"x", [0] * (MAX_FDS_PER_MESSAGE + 1))


def test_no_fds_is_plain_send(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    send_with_fds(a, b"plain", [])
    assert recv_with_fds(b, 100) == (b"plain", [])


def test_large_payload_fds_come_with_first_byte(pair: tuple[socket.socket, socket.socket]) -> None:
    """A frame bigger than the socket buffer is sent in pieces; the fd arrives with the
    first piece and the rest follows intact."""
    a, b = pair
    payload = os.urandom(2 << 20)
    fd = memfd(b"big")
    sender = threading.Thread(target=send_with_fds, args=(a, payload, [fd]))
    sender.start()
    received = bytearray()
    all_fds: list[tuple[int, list[int]]] = []
    while len(received) < len(payload):
        data, fds = recv_with_fds(b, 65536)
        if fds:
            all_fds.append((len(received), fds))
        received += data
    sender.join()
    os.close(fd)
    assert bytes(received) == payload
    assert len(all_fds) == 1 and all_fds[0][0] == 0
    close_fds(all_fds[0][1])


def test_peer_credentials(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    creds = peer_credentials(a)
    assert (creds.pid, creds.uid, creds.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_request_with_fd_through_connections(pair: tuple[socket.socket, socket.socket]) -> None:
    """The client connection's frame and the request's memfd cross a real socket; the
    server connection hands the request out with the received fd attached."""
    a, b = pair
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    send_with_fds(a, client.send(Hello(version=1, client="c")), [])
    server.receive_data(*recv_with_fds(b, 65536))
    assert isinstance(server.next_event(), Hello)
    client.receive_data(server.send(Welcome(version=1, server="s")))
    assert isinstance(client.next_event(), Welcome)

    fd = memfd(b"guest ram")
    request = Request(id=1, method="session.preserve", params={"token": 1}, fds=[fd])
    send_with_fds(a, client.send(request), request.fds)
    os.close(fd)
    data, fds = recv_with_fds(b, 65536)
    server.receive_data(data, fds)
    got = server.next_event()
    assert isinstance(got, Request) and got.nfds == 1 and len(got.fds) == 1
    assert os.pread(got.fds[0], 100, 0) == b"guest ram"
    close_fds(got.fds)
    assert server.take_unclaimed_fds() == []


def test_frame_claiming_fds_it_did_not_get(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    server = Connection(Role.SERVER)
    server.receive_data(cbor_frame({"kind": "hello", "version": 1, "client": "c"}))
    server.next_event()
    a.sendall(cbor_frame({"kind": "request", "id": 1, "method": "m", "params": {}, "nfds": 1}))
    server.receive_data(*recv_with_fds(b, 65536))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.name is ProtocolErrorName.MISSING_FDS
