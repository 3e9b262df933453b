"""One client connection: its reader, its writer, and the requests in flight on it.

Each connection gets one reader (the only task that receives) and one writer, fed by a
bounded channel, for what other tasks send (events, replies that must wait for room), so a
client that stops reading applies backpressure to its own requests, never to the daemon.

A reply normally finds the writer idle, and with few connections open (`INLINE_UP_TO`) it
is sent at once by the task that made it: that saves the hop through the channel and the
writer's wake-up, about 15% of a cheap request's round trip at one connection. One task sends
at a time, in the order messages were made: a reply goes inline only when nothing is
queued or being sent (`_queued` is 0), and the writer waits for an inline send that is
waiting for room before it sends its next message.

Requests run inline, in order, unless their method waits (`MethodSpec.waits`: barriers,
deadlines), which run as tasks; at most `MAX_IN_FLIGHT` per connection. Received fds
belong to the request and are closed when it is done, whatever happens. What a request
does is the dispatcher's business: the connection is handed a `Dispatch` and only moves
messages.
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
INLINE_UP_TO = 4
"""Replies go out inline while the daemon has at most this many connections open. Beyond,
each goes through its writer: measured at 50 busy connections, replies that leave in a
batch, after the scheduler has run every reader, cost both sides less CPU per request
(inline was 25% slower there) than one send per request the moment it is made."""
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
        # Messages queued for the writer or being sent by it; a reply goes inline at 0.
        self._queued = 0
        self._inline: trio.Event | None = None  # while a reply goes inline; set when it is out
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
            self._queue_nowait(event)
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
                await self._queue(Event(event=event.event, ts=event.ts, data=event.data))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if event.event == DROPPED:  # the bus's final event is queued: flush it, then go
                self.drop("fell behind on events")
                return

    def _queue_nowait(self, message: Outgoing) -> None:
        """Queue `message` for the writer (raises as `send_nowait` does)."""
        self._send.send_nowait(message)
        self._queued += 1

    async def _queue(self, message: Outgoing) -> None:
        """Queue `message` for the writer, waiting for room."""
        self._queued += 1  # counted while waiting too: a reply must not overtake it
        try:
            await self._send.send(message)
        except BaseException:
            self._queued -= 1
            raise

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
                    while self._inline is not None:  # a reply is going out inline
                        await self._inline.wait()
                    if not await self._deliver(message):
                        return
                finally:
                    self._queued -= 1

    async def _send_inline(self, reply: Reply | ErrorReply) -> None:
        """Send `reply` from this task, the writer being idle (`_queued` is 0)."""
        done = self._inline = trio.Event()
        try:
            await self._deliver(reply)
        finally:
            self._inline = None
            done.set()

    async def _deliver(self, message: Outgoing) -> bool:
        """Write one message; False once the stream is broken (the connection ends)."""
        try:
            await self.stream.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._scope.cancel()
            return False
        except Moot:
            pass  # queued before the client broke the protocol; its error goes next
        except ProtocolError as exc:
            log.warning("unsendable", conn=self.id, error=str(exc))
        finally:
            if isinstance(message, Reply):
                close_fds(message.fds)
        return True

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                message = await self.stream.receive()
            except RemoteProtocolError as exc:
                log.info("protocol_error", conn=self.id, error=str(exc))
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self._queue_nowait(error_reply(None, exc))
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
            self._queue_nowait(error_reply(None, exc))

    async def _handle(self, request: Request) -> None:
        try:
            self.requests += 1
            reply = await self._dispatch(self, request)
            if (
                self._queued == 0
                and self._inline is None
                and not self._dropping
                and self.daemon.admission.open <= INLINE_UP_TO
            ):
                await self._send_inline(reply)
                return
            try:
                try:
                    self._queue_nowait(reply)
                except trio.WouldBlock:  # the client is not reading: wait for room
                    await self._queue(reply)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                if isinstance(reply, Reply):
                    close_fds(reply.fds)
        finally:
            close_fds(request.fds)
            self._slots.release()
