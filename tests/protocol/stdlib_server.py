"""A tiny blocking luod stand-in for client tests: one thread per connection, the sans-IO
`Connection` in server role, and a table of test methods.

Methods: `echo` (result = params), `fail` (an `error` naming an object), `readfd` (reads
the passed fd), `makefd` (replies with a memfd), `events` (sends `n` events, then
replies), `late` (replies after `delay` seconds), `close` (hangs up), `garbage` (sends a
bad frame), `kick` (a connection-level error). Anything else is `luod.UnknownMethod`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from luod.ipc.connection import CLOSED, NEED_DATA, Connection, error_reply
from luod.ipc.errors import (
    ErrorInfo,
    ProtocolError,
    ProtocolErrorName,
    RemoteProtocolError,
)
from luod.ipc.fdpass import close_fds, recv_with_fds, send_with_fds
from luod.ipc.messages import ErrorReply, Event, Hello, Message, Reply, Request, Welcome
from luod.ipc.state import Role


class StdlibServer:
    def __init__(self, path: Path, *, supported_versions: frozenset[int] = frozenset({1})):
        self.path = path
        self.supported_versions = supported_versions
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self.accepter.start()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.accepter.join(5)
        for thread in self.threads:
            thread.join(5)

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(Role.SERVER, supported_versions=self.supported_versions)
        sock.settimeout(10)

        def send(message: Message) -> None:
            fds = message.fds if isinstance(message, Reply) else ()
            send_with_fds(sock, conn.send(message), fds)

        try:
            while True:
                try:
                    event = conn.next_event()
                except RemoteProtocolError as exc:
                    send(error_reply(exc, None))
                    return
                if event is NEED_DATA:
                    try:
                        data, fds = recv_with_fds(sock, 65536)
                    except OSError:
                        return
                    conn.receive_data(data, fds)
                    continue
                if event is CLOSED:
                    return
                if isinstance(event, Hello):
                    send(Welcome(version=event.version, server="test-luod"))
                elif isinstance(event, Request) and not self._handle(sock, conn, send, event):
                    return
        except (ProtocolError, OSError):
            return
        finally:
            close_fds(conn.take_unclaimed_fds())
            sock.close()

    def _handle(self, sock: socket.socket, conn: Connection, send: object, req: Request) -> bool:
        assert callable(send)
        params = req.params
        method = req.method
        try:
            if method == "echo":
                send(Reply(id=req.id, result=params))
            elif method == "fail":
                info = ErrorInfo("luod.SessionExists", "EEXIST", "session 'vm1' exists", "vm1")
                send(ErrorReply(id=req.id, error=info))
            elif method == "readfd":
                send(Reply(id=req.id, result=[os.pread(fd, 100, 0) for fd in req.fds]))
            elif method == "makefd":
                fd = os.memfd_create("reply")
                os.write(fd, params.get("content", b"from the server"))
                try:
                    send(Reply(id=req.id, result=None, fds=[fd]))
                finally:
                    os.close(fd)
            elif method == "events":
                for i in range(params.get("n", 1)):
                    send(Event(event="tick", ts=time.time(), data={"i": i}))
                send(Reply(id=req.id, result="done"))
            elif method == "late":
                time.sleep(params.get("delay", 0.3))
                fd = os.memfd_create("late")
                try:
                    send(Reply(id=req.id, result="late", fds=[fd]))
                finally:
                    os.close(fd)
            elif method == "close":
                return False
            elif method == "garbage":
                sock.sendall(b"\x00\x00\x00\x02\xff\xff")
            elif method == "kick":
                exc = RemoteProtocolError(ProtocolErrorName.BAD_MESSAGE, "go away")
                send(error_reply(exc, None))
                return False
            else:
                exc = RemoteProtocolError(
                    ProtocolErrorName.UNKNOWN_METHOD, f"unknown method {method!r}", object=method
                )
                send(error_reply(exc, req.id))
        finally:
            close_fds(req.fds)
        return True
