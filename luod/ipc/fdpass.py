"""File-descriptor passing (SCM_RIGHTS) and peer credentials (SO_PEERCRED), stdlib only.

Owns the ancillary-data details of Unix stream sockets, for the blocking client and for the
trio adapter (which calls `sendmsg`/`recvmsg` on the trio socket itself but shares
`fds_ancillary` and `parse_fds` from here). Rules kept here:

* fds are sent with at least one data byte, attached to the first byte of the data, so the
  receiver gets them with the chunk that starts the frame (see `luod.ipc.connection`);
* received fds are opened close-on-exec (`MSG_CMSG_CLOEXEC`) so they never leak into
  child processes;
* if the kernel truncated the ancillary data (`MSG_CTRUNC`: the peer sent more fds than we
  made room for, or we hit the fd limit), every fd that did arrive is closed and the call
  fails: a message with some of its fds missing must never be processed.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

from luod.ipc.errors import ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import MAX_FDS_PER_MESSAGE

__all__ = [
    "MSG_CMSG_CLOEXEC",
    "UCRED_SIZE",
    "PeerCredentials",
    "ancillary_space",
    "close_fds",
    "decode_ucred",
    "fds_ancillary",
    "parse_fds",
    "peer_credentials",
    "recv_with_fds",
    "send_with_fds",
]

_INT_SIZE: Final = array.array("i").itemsize
# Plain ints: the socket module's constants are IntFlag members, and `int & IntFlag` runs
# the enum machinery on every read.
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)
MSG_CMSG_CLOEXEC: Final = int(socket.MSG_CMSG_CLOEXEC)
"""`socket.MSG_CMSG_CLOEXEC` as a plain int, for `recvmsg` flags."""
_UCRED: Final = struct.Struct("3i")
UCRED_SIZE: Final = _UCRED.size
"""Size of `struct ucred` (pid, uid, gid), the SO_PEERCRED option value."""

AncData = list[tuple[int, int, bytes]]


class PeerCredentials(NamedTuple):
    """Who is at the other end of a Unix socket, as the kernel saw it at connect time."""

    pid: int
    uid: int
    gid: int


def fds_ancillary(fds: Sequence[int]) -> list[tuple[int, int, array.array[int]]]:
    """The ancillary-data argument of `sendmsg` carrying `fds` (empty list for no fds)."""
    if not fds:
        return []
    if len(fds) > MAX_FDS_PER_MESSAGE:
        raise ValueError(f"at most {MAX_FDS_PER_MESSAGE} fds per message, got {len(fds)}")
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


def ancillary_space(maxfds: int) -> int:
    """The `ancbufsize` for `recvmsg` that has room for `maxfds` fds."""
    return socket.CMSG_SPACE(maxfds * _INT_SIZE) if maxfds > 0 else 0


def parse_fds(ancdata: AncData, msg_flags: int) -> list[int]:
    """Extract the fds from `recvmsg` results.

    Raises:
        RemoteProtocolError: `luod.MissingFds` if the ancillary data was truncated
            (`MSG_CTRUNC`); the fds that did arrive are closed first.
    """
    if not ancdata and not msg_flags & _MSG_CTRUNC:
        return []
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            # A truncated cmsg may end in a partial int: keep only whole ones.
            fds.frombytes(data[: len(data) - len(data) % _INT_SIZE])
    if msg_flags & _MSG_CTRUNC:
        close_fds(fds)
        raise RemoteProtocolError(
            ProtocolErrorName.MISSING_FDS,
            "file descriptors were dropped (ancillary data truncated: the peer sent more "
            "than this side accepts per read, or the fd limit was reached)",
        )
    return list(fds)


def send_with_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send all of `data` on a blocking (or timeout-mode) socket, with `fds` attached to
    its first byte. Without fds this is `sock.sendall(data)`.

    Raises:
        ValueError: fds without data, or more than `MAX_FDS_PER_MESSAGE` fds.
        OSError: from the socket (TimeoutError for a timeout).
    """
    if not fds:
        sock.sendall(data)
        return
    if not data:
        raise ValueError("file descriptors must travel with at least one data byte")
    # Only the first sendmsg carries the fds; a partial write sends the rest plainly.
    sent = sock.sendmsg([data], fds_ancillary(fds))
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def recv_with_fds(
    sock: socket.socket, bufsize: int, maxfds: int = MAX_FDS_PER_MESSAGE
) -> tuple[bytes, list[int]]:
    """Receive up to `bufsize` bytes and up to `maxfds` fds (close-on-exec).

    Returns `(data, fds)`; `data == b""` means end of stream. The caller owns the fds.

    Raises:
        RemoteProtocolError: `luod.MissingFds` if more fds arrived than `maxfds` allows (the
            ones that did arrive are closed).
        OSError: from the socket (TimeoutError for a timeout).
    """
    data, ancdata, flags, _addr = sock.recvmsg(bufsize, ancillary_space(maxfds), MSG_CMSG_CLOEXEC)
    return data, parse_fds(ancdata, flags)


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The peer's pid, uid and gid (SO_PEERCRED), as of connect(); read it right after
    accept(): the pid may be recycled once the peer exits."""
    return decode_ucred(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED_SIZE))


def decode_ucred(raw: bytes) -> PeerCredentials:
    """Decode a `struct ucred` as returned by `getsockopt(SOL_SOCKET, SO_PEERCRED, ...)`."""
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def close_fds(fds: Iterable[int]) -> None:
    """Close every fd in `fds`, ignoring errors (used for fds nobody will claim)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
