"""A canned luod for luoctl's tests: the real protocol, scripted answers.

One thread per connection speaks the protocol through the sans-IO `Connection` in server
role and `luod.ipc.fdpass`, like the real daemon. Every request is first structured with
the daemon's own method registry (`luod.ipc.methods.METHODS`), so a test fails with
`luod.BadParams` if luoctl sends params the contract refuses; then the method's `Answer`
(set per test in `FakeDaemon.answers`) decides the reply: a result, fds, an error, events
before or after it, a delay, or a hang-up. Unscripted methods get `{}`.

Received fds are inspected (content, whether they are memfds) and recorded in
`FakeDaemon.requests`, then closed. The server runs in the test process, so in-process
`main()` calls and subprocesses of the console script both work against it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luod.ipc.connection import CLOSED, NEED_DATA, Connection, error_reply
from luod.ipc.errors import ErrorInfo, ProtocolError, RemoteProtocolError
from luod.ipc.fdpass import close_fds, recv_with_fds, send_with_fds
from luod.ipc.messages import ErrorReply, Event, Hello, Message, Reply, Request, Welcome
from luod.ipc.methods import METHODS
from luod.ipc.state import Role


@dataclass
class Answer:
    """What the fake daemon does with one request."""

    result: Any = None
    error: ErrorInfo | None = None
    fds: Callable[[], list[int]] | None = None
    """Makes the fds to send with the reply (the server closes its copies afterwards)."""
    events_before: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events_after: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tick_after: float | None = None
    """Keep sending `tick` events this often after the reply, until the client leaves."""
    close_after: bool = False
    """Hang up after the reply (and its events)."""
    delay: float = 0.0
    hang_up: bool = False
    """Close the connection instead of answering."""


@dataclass
class Seen:
    """One request as the fake daemon received it."""

    method: str
    params: dict[str, Any]
    fd_contents: list[bytes]
    fd_is_memfd: list[bool]


def error(name: str, errno: str | None, message: str, obj: str | None = None) -> Answer:
    """An answer that refuses the request."""
    return Answer(error=ErrorInfo(name=name, errno=errno, message=message, object=obj))


def memfd_with(content: bytes, pos: int = 0) -> Callable[[], list[int]]:
    """A factory of one memfd holding `content`, its offset left at `pos`."""

    def make() -> list[int]:
        fd = os.memfd_create("fake-retrieved", os.MFD_CLOEXEC)
        os.write(fd, content)
        os.lseek(fd, pos, os.SEEK_SET)
        return [fd]

    return make


def _inspect(fd: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks), os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")


class FakeDaemon:
    """Listens on `path`; script it through `answers` and read `requests`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Answer] = {}
        self.requests: list[Seen] = []
        self.clients: list[str] = []
        self._stop = threading.Event()
        self._busy = 0
        self._idle = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self._accepter.start()

    def methods(self) -> list[str]:
        return [seen.method for seen in self.requests]

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled. A client can read a reply before the
        handler that sent it has closed its copies of the reply's fds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(Role.SERVER)
        sock.settimeout(10)

        def send(message: Message) -> None:
            fds = message.fds if isinstance(message, Reply) else ()
            send_with_fds(sock, conn.send(message), fds)

        try:
            while not self._stop.is_set():
                try:
                    item = conn.next_event()
                except RemoteProtocolError as exc:
                    send(error_reply(exc, None))
                    return
                if item is NEED_DATA:
                    try:
                        data, fds = recv_with_fds(sock, 65536)
                    except OSError:
                        return
                    conn.receive_data(data, fds)
                elif item is CLOSED:
                    return
                elif isinstance(item, Hello):
                    self.clients.append(item.client)
                    send(Welcome(version=item.version, server="fake-luod"))
                elif isinstance(item, Request) and not self._handle(item, send):
                    return
        except (ProtocolError, OSError):
            return
        finally:
            close_fds(conn.take_unclaimed_fds())
            sock.close()

    def _handle(self, request: Request, send: Callable[[Message], None]) -> bool:
        """Answer one request; False to end the connection."""
        with self._idle:
            self._busy += 1
        try:
            return self._answer(request, send)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _answer(self, request: Request, send: Callable[[Message], None]) -> bool:
        try:
            inspected = [_inspect(fd) for fd in request.fds]
        finally:
            close_fds(request.fds)
        self.requests.append(
            Seen(
                request.method,
                dict(request.params),
                [content for content, _ in inspected],
                [is_memfd for _, is_memfd in inspected],
            )
        )
        try:
            METHODS.structure(request)  # the daemon's own contract check
        except RemoteProtocolError as exc:
            send(error_reply(exc, request.id))
            return True
        answer = self.answers.get(request.method, Answer(result={}))
        if answer.delay:
            time.sleep(answer.delay)
        if answer.hang_up:
            return False
        for name, data in answer.events_before:
            send(Event(event=name, ts=time.time(), data=data))
        if answer.error is not None:
            send(ErrorReply(id=request.id, error=answer.error))
        else:
            fds = answer.fds() if answer.fds is not None else []
            try:
                send(Reply(id=request.id, result=answer.result, fds=fds))
            finally:
                close_fds(fds)
        for name, data in answer.events_after:
            send(Event(event=name, ts=time.time(), data=data))
        if answer.tick_after is not None:
            tick = 0
            while not self._stop.is_set():  # until the client goes away (send fails)
                send(Event(event="tick", ts=time.time(), data={"n": tick}))
                tick += 1
                time.sleep(answer.tick_after)
        return not answer.close_after
