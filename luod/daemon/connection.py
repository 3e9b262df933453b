"""One client connection: its reader, its writer, and the requests in flight on it.

Each connection gets one reader (the only task that receives) and one writer (the only
task that sends, fed by a bounded channel, so a client that stops reading applies
backpressure to its own requests, never to the daemon). Requests run inline, in order,
unless their method waits (`MethodSpec.waits`: barriers, deadlines), which run as tasks;
at most `MAX_IN_FLIGHT` per connection. Received fds belong to the request and are closed
when it is done, whatever happens. What a request does is the dispatcher's business: the
connection is handed a `Dispatch` and only moves messages.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from luod import __version__
from luod.daemon.access import NO_ACCESS
from luod.daemon.core import Daemon
from luod.daemon.errors import DaemonError, error_reply
from luod.daemon.events import DROPPED, Subscriber
from luod.daemon.owners import Caller
from luod.daemon.participants import Participant
from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import CLOSED
from luod.ipc.errors import (
    ConnectionLost,
    ProtocolError,
    ProtocolErrorName,
    RemoteProtocolError,
)
from luod.ipc.fdpass import close_fds
from luod.ipc.messages import ErrorReply, Event, Reply, Request
from luod.ipc.methods import METHODS
from luod.ipc.state import Moot

log = structlog.get_logger("luod.server")

MAX_IN_FLIGHT = 64
DRAIN_SECONDS = 2.0
SEND_QUEUE = 256
SERVER_NAME = f"luod {__version__}"

Outgoing = Reply | ErrorReply | Event
Dispatch = Callable[["ClientConnection", Request], Awaitable[Reply | ErrorReply]]


class ClientConnection:
    def __init__(
        self,
        daemon: Daemon,
        stream: FramedStream,
        caller: Caller,
        conn_id: int,
        dispatch: Dispatch,
    ) -> None:
        self.daemon = daemon
        self.stream = stream
        self.caller = caller
        self.access = NO_ACCESS  # resolved at hello: requests only read `access.admin`
        self.id = conn_id
        self.participant: Participant | None = None
        self.subscriber: Subscriber | None = None
        self.holds_files = False  # created or retrieved sessions/files: dies with a kexec
        self._dispatch = dispatch
        self._send, self._receive = trio.open_memory_channel[Outgoing](SEND_QUEUE)
        self._scope = trio.CancelScope()
        self._slots = trio.Semaphore(MAX_IN_FLIGHT)
        self._nursery: trio.Nursery | None = None
        self._dropping = False
        self.requests = 0

    def drop(self, reason: str) -> None:
        """End this connection. What is already queued (a reply, a final event) is flushed
        first, for at most DRAIN_SECONDS, so the client learns why; then it closes."""
        log.info("connection_dropped", conn=self.id, reason=reason)
        self._dropping = True
        self._send.close()
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + DRAIN_SECONDS)

    def send_event_nowait(self, name: str, **data: Any) -> None:
        """Queue an event for this client; a client whose queue is full is dropped."""
        event = Event(event=name, ts=time.time(), data=data)
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.drop("send queue full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def run(self) -> None:
        with self._scope:
            timeout = self.daemon.admission.limits.hello_timeout
            with trio.move_on_after(timeout) as waiting:
                try:
                    await self.stream.accept_hello(SERVER_NAME)
                except (ProtocolError, ConnectionLost, trio.BrokenResourceError):
                    return
            if waiting.cancelled_caught:  # idle or slow-loris: its slot goes to others
                late = DaemonError(
                    "HelloTimeout",
                    f"no hello within {timeout:g} s (--hello-timeout); closing",
                    errno=errno.ETIMEDOUT,
                )
                log.info("hello_timeout", conn=self.id, seconds=timeout)
                with trio.move_on_after(DRAIN_SECONDS):
                    await self.stream.send_error_and_forget(error_reply(None, late))
                return
            self.access = self.daemon.policy.resolve(self.caller.uid, self.caller.gid)
            async with trio.open_nursery() as outer:
                outer.start_soon(self._writer)
                try:
                    async with trio.open_nursery() as handlers:
                        self._nursery = handlers
                        await self._reader(handlers)
                        handlers.cancel_scope.cancel()
                finally:
                    # Reading is over: let the writer flush what is queued (a final error
                    # reply, say), but never wait long for a client that does not read.
                    self._send.close()
                    outer.cancel_scope.deadline = trio.current_time() + DRAIN_SECONDS

    def follow(self, sub: Subscriber) -> None:
        """Forward bus events to this client until it is dropped or disconnects."""
        assert self._nursery is not None
        self.subscriber = sub
        self._nursery.start_soon(self._forward, sub)

    async def _forward(self, sub: Subscriber) -> None:
        # Awaiting the send queue lets a slow reader fall behind on the bus, which drops
        # it with a final event once it is `capacity` events behind; the daemon never waits.
        async for event in sub:
            try:
                await self._send.send(Event(event=event.event, ts=event.ts, data=event.data))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if event.event == DROPPED:  # the bus's final event is queued: flush it, then go
                self.drop("fell behind on events")
                return

    async def _writer(self) -> None:
        async with self._receive:
            receive = self._receive.receive  # not `async for`: one coroutine less per reply
            while True:
                try:
                    message = await receive()
                except trio.EndOfChannel:
                    if self._dropping:  # everything queued before the drop is out
                        self._scope.cancel()
                    return
                try:
                    await self.stream.send(message)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._scope.cancel()
                    return
                except Moot:
                    pass  # queued before the client broke the protocol; its error goes next
                except ProtocolError as exc:
                    log.warning("unsendable", conn=self.id, error=str(exc))
                finally:
                    if isinstance(message, Reply):
                        close_fds(message.fds)

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                message = await self.stream.receive()
            except RemoteProtocolError as exc:
                log.info("protocol_error", conn=self.id, error=str(exc))
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self._send.send_nowait(error_reply(None, exc))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if message is CLOSED:
                return
            if not isinstance(message, Request):
                continue
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                await self._slots.acquire()
            spec = METHODS.get(message.method)
            if message.fds and spec is not None and spec.fds_in[1] == 0:
                self._refuse_fds(message)  # docs/protocol.md: BadMessage, then close
                self._slots.release()
                return
            if spec is not None and spec.waits:
                nursery.start_soon(self._handle, message)
            else:
                # Most methods run the synchronous model and never wait: answering them
                # here saves a task per request, and keeps replies in request order.
                # (`receive` checkpoints now and then even when frames are buffered, so a
                # client pipelining a burst of requests cannot hold the scheduler.)
                await self._handle(message)

    def _refuse_fds(self, request: Request) -> None:
        close_fds(request.fds)
        exc = RemoteProtocolError(
            ProtocolErrorName.BAD_MESSAGE,
            f"{request.method} takes no file descriptors; request {request.id} sent "
            f"{len(request.fds)}",
            object=request.method,
        )
        log.info("protocol_error", conn=self.id, error=str(exc))
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(error_reply(None, exc))

    async def _handle(self, request: Request) -> None:
        try:
            self.requests += 1
            reply = await self._dispatch(self, request)
            try:
                try:
                    self._send.send_nowait(reply)
                except trio.WouldBlock:  # the client is not reading: wait for room
                    await self._send.send(reply)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                if isinstance(reply, Reply):
                    close_fds(reply.fds)
        finally:
            close_fds(request.fds)
            self._slots.release()
