"""The daemon's ends of luod-run's sockets, and the processes behind them.

Every fd the interposer speaks through is one end of a SOCK_SEQPACKET socketpair made here;
luod keeps the other. The program's end is a real descriptor, so the kernel's lifetime
rules come for free: when the last copy is closed (close, exit, dup'd copies, forked
children) luod's end reads end-of-file, and only then does the device or session go away.

`Channel` is one such end: `kind` says what the program's fd is (the gateway luod-run
passes at start, the /dev/liveupdate fd, a session fd), `kfd` the emulated kernel fd behind
it. `Gateway` is one luod-run invocation: the uid that started it and a pidfd for every
process that announced itself, so a kexec can end them all as it ends userspace.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
from collections.abc import Iterable
from typing import Literal

import trio

from luod.daemon.devliveupdate.wire import PAYLOAD_MAX, REQUEST, UCRED
from luod.kernel_model.vfs import File

Kind = Literal["gateway", "device", "session"]
_ANCILLARY = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(UCRED.size)


class Gateway:
    def __init__(self, uid: int, admin: bool) -> None:
        self.uid = uid
        self.admin = admin  # may reboot (kexec) the machine: luod's admin rule
        self._pidfds: dict[int, int] = {}

    def announce(self, pid: int) -> None:
        if pid <= 0 or pid in self._pidfds:
            return
        self._reap_exited()
        with contextlib.suppress(OSError):
            self._pidfds[pid] = os.pidfd_open(pid)

    def forget_exited(self) -> bool:
        """Drop the processes that have exited; True when none is left."""
        self._reap_exited()
        return not self._pidfds

    def _reap_exited(self) -> None:
        poller = select.poll()
        for fd in self._pidfds.values():
            poller.register(fd, select.POLLIN)
        exited = {fd for fd, _ in poller.poll(0)}
        for pid, fd in list(self._pidfds.items()):
            if fd in exited:
                os.close(self._pidfds.pop(pid))

    def kill(self, spare: int | None) -> None:
        """SIGKILL every announced process but `spare`; forget them all."""
        for pid, fd in self._pidfds.items():
            if pid != spare:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        self._pidfds.clear()


class Message:
    """One request: header fields, payload, the fd it carried, the sender's pid."""

    def __init__(self, data: bytes, fd: int | None, pid: int) -> None:
        self.op, self.cmd, self.size, self.flags = REQUEST.unpack_from(data)
        self.payload = data[REQUEST.size :]
        self.fd = fd
        self.pid = pid


class Channel:
    def __init__(self, kind: Kind, sock: socket.socket, gateway: Gateway) -> None:
        self.kind = kind
        self.sock = sock
        self.gateway = gateway
        self.kfd: int | None = None
        # A session's token -> the emulated file and the real memfd standing for it.
        self.retrieved: dict[int, tuple[File, int]] = {}
        self.closed = False

    @classmethod
    def pair(cls, kind: Kind, gateway: Gateway) -> tuple[Channel, socket.socket]:
        """A new channel and the program's end of it (the caller sends and closes it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        return cls(kind, ours, gateway), theirs

    async def receive(self) -> Message | None:
        """The next request, or None at end-of-file (the program's last reference is gone)
        or when luod closed this end."""
        while not self.closed:
            try:
                await trio.lowlevel.wait_readable(self.sock)
                data, ancdata, _, _ = self.sock.recvmsg(
                    REQUEST.size + PAYLOAD_MAX, _ANCILLARY, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                continue
            except (trio.ClosedResourceError, OSError):
                return None
            fds: list[int] = []
            pid = 0
            for level, kind, body in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(
                        int.from_bytes(body[i : i + 4], "little")
                        for i in range(0, len(body) - 3, 4)
                    )
                elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack_from(body)[0]
            if len(data) < REQUEST.size:
                for fd in fds:
                    os.close(fd)
                return None if not data else await self.receive()
            for extra in fds[1:]:
                os.close(extra)
            return Message(data, fds[0] if fds else None, pid)
        return None

    def send(self, data: bytes, fd: int | None = None, *, via: int | None = None) -> None:
        """Answer (on `via`, the request's own reply socket, for the gateway's requests);
        the program waits for it, so the socket buffer always has room."""
        if self.closed and via is None:
            return
        ancdata = (
            [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, "little"))]
        )
        sock = self.sock if via is None else socket.socket(fileno=via)
        try:
            with contextlib.suppress(OSError):
                sock.sendmsg([data], ancdata)
        finally:
            if via is not None:
                sock.detach()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


def hung_up(channels: Iterable[Channel]) -> list[Channel]:
    """The channels whose program side is gone (POLLHUP), in one poll."""
    by_fd = {ch.sock.fileno(): ch for ch in channels if not ch.closed}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLHUP)
    return [by_fd[fd] for fd, events in poller.poll(0) if events & select.POLLHUP]
