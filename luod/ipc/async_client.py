"""The trio client: concurrent calls and an event stream over one connection, for
participants (VMMs and other long-lived clients) written with trio.

Owns the client-side concurrency: a background reader task that dispatches replies by
request id to the task waiting for each, and events into a bounded memory channel; a send
lock serialising writers; cancellation; and orderly shutdown.

    async with open_client("/run/luod/luod.sock", "my-vmm") as client:
        await client.call("participant.register", {"name": "vm1", "sessions": ["vm1"]})
        async for event in client.events():
            ...

Behaviour:

* `call` may be used from many tasks at once; replies may come back in any order.
* Cancelling a `call` is safe. Cancellation while the request is being written is
  deferred until the frame is out (the write is shielded, bounded by `send_timeout`,
  after which the client is declared broken); cancellation while waiting abandons the
  request: its reply is dropped when it arrives and any fds in it are closed.
* Events are buffered in a bounded channel (`event_buffer`). The reader never blocks on
  it, because replies must keep flowing: when the buffer is full the *oldest* event is
  dropped and `events_dropped` counts it. Participants must consume events promptly.
* When the connection fails (daemon gone, protocol violation, connection-level `error`),
  every waiting and later `call` raises the failure (`ConnectionLost`,
  `RemoteProtocolError` or `RemoteError`), and `events()` raises it after the buffered
  events. After `aclose()` (or leaving the `async with`), `events()` simply ends.
* Leaving the `async with` closes the connection and every fd nobody claimed. Exceptions
  from the body propagate unwrapped (not inside an ExceptionGroup).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from luod.ipc.async_transport import FramedStream
from luod.ipc.connection import CLOSED, Connection
from luod.ipc.errors import (
    ConnectionLost,
    DaemonTimeout,
    ProtocolError,
    RemoteError,
    connect_error,
)
from luod.ipc.fdpass import close_fds
from luod.ipc.framing import DEFAULT_MAX_FRAME
from luod.ipc.messages import MAX_ID, ErrorReply, Event, Reply, Request, Welcome
from luod.ipc.state import Role

__all__ = ["TrioClient", "connect_stream", "open_client"]

DEFAULT_EVENT_BUFFER: Final = 256
DEFAULT_SEND_TIMEOUT: Final = 30.0


@attrs.define
class _Waiter:
    """One task waiting for the answer to one request."""

    done: trio.Event = attrs.Factory(trio.Event)
    answer: Reply | ErrorReply | None = None


class TrioClient:
    """A connected, welcomed client. Get one from `open_client` or `connect_stream`."""

    def __init__(
        self,
        framed: FramedStream,
        welcome: Welcome,
        *,
        event_buffer: int = DEFAULT_EVENT_BUFFER,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        self._framed = framed
        self.server_name = welcome.server
        self.version = welcome.version
        self.send_timeout = send_timeout
        self._send_lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._next_id = 1
        self._event_send, self._event_receive = trio.open_memory_channel[Event](event_buffer)
        self.events_dropped = 0
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def can_pass_fds(self) -> bool:
        return self._framed.can_pass_fds

    # --- requests ------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        fds: Sequence[int] = (),
    ) -> Reply:
        """Call `method`; return its `Reply` (`.result`, and `.fds` which the caller owns).

        Raises:
            RemoteError: the daemon answered with an `error`.
            ConnectionLost / RemoteProtocolError: the connection failed (see module doc).
            LocalProtocolError: the request cannot be encoded; nothing was sent.
        """
        self._raise_if_failed()
        request_id = self._allocate_id()
        request = Request(id=request_id, method=method, params=dict(params or {}), fds=fds)
        waiter = _Waiter()
        self._waiters[request_id] = waiter
        try:
            async with self._send_lock:
                self._raise_if_failed()
                sent = False
                # Shielded: a frame must never be cut in half by a cancellation.
                with trio.CancelScope(shield=True), trio.move_on_after(self.send_timeout):
                    await self._send(request)
                    sent = True
                if not sent:
                    self._fail(DaemonTimeout("timed out sending a request to luod"))
                    self._raise_if_failed()
            try:
                await waiter.done.wait()
            except trio.Cancelled:
                # The reply may have been delivered just before the cancellation.
                if isinstance(waiter.answer, Reply):
                    close_fds(waiter.answer.fds)
                raise
        finally:
            # If still registered, nobody will collect the reply: the reader drops it.
            self._waiters.pop(request_id, None)
        answer = waiter.answer
        if answer is None:
            self._raise_if_failed()
            raise AssertionError("waiter woken without an answer or a failure")
        if isinstance(answer, ErrorReply):
            raise RemoteError(answer.error, request_id=request_id, method=method)
        return answer

    async def _send(self, request: Request) -> None:
        try:
            await self._framed.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(ConnectionLost(f"connection to luod lost while sending: {exc}"))
            self._raise_if_failed()

    def _allocate_id(self) -> int:
        in_flight = self._framed.connection.in_flight
        while True:
            request_id = self._next_id
            self._next_id = 0 if request_id == MAX_ID else request_id + 1
            if request_id not in in_flight and request_id not in self._waiters:
                return request_id

    # --- events --------------------------------------------------------------------------

    def events(self) -> _EventIterator:
        """An async iterator over events, in arrival order. Several iterators share one
        stream (each event goes to one of them)."""
        return _EventIterator(self)

    # --- the reader task -----------------------------------------------------------------

    async def _reader(self) -> None:
        """Read until the connection ends; never raises for connection problems."""
        try:
            while True:
                event = await self._framed.receive()
                if event is CLOSED:
                    self._fail(ConnectionLost("luod closed the connection"))
                    return
                if isinstance(event, Event):
                    self._deliver_event(event)
                elif isinstance(event, Reply | ErrorReply) and event.id is not None:
                    waiter = self._waiters.pop(event.id, None)
                    if waiter is None:  # abandoned by a cancelled call
                        if isinstance(event, Reply):
                            close_fds(event.fds)
                        continue
                    waiter.answer = event
                    waiter.done.set()
                elif isinstance(event, ErrorReply):  # id null: connection-level error
                    self._fail(RemoteError(event.error))
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(ConnectionLost(f"connection to luod lost: {exc}"))
        except ProtocolError as exc:
            self._fail(exc)

    def _deliver_event(self, event: Event) -> None:
        try:
            self._event_send.send_nowait(event)
        except trio.WouldBlock:
            # Full: drop the oldest so the newest (most relevant) is kept.
            try:
                self._event_receive.receive_nowait()
                self.events_dropped += 1
            except trio.WouldBlock:  # a consumer emptied it meanwhile
                pass
            self._event_send.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.events_dropped += 1

    # --- failure and closing -------------------------------------------------------------

    def _fail(self, failure: BaseException) -> None:
        """Record the first failure, wake every waiter, end the event stream."""
        if self._failure is None:
            self._failure = ConnectionLost("the client was closed") if self._closed else failure
        for waiter in self._waiters.values():
            waiter.done.set()
        self._event_send.close()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ConnectionLost("the client was closed")

    async def aclose(self) -> None:
        """Close the connection; waiting calls raise ConnectionLost. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._fail(ConnectionLost("the client was closed"))
        # Drain and close what nobody will read: events carry no fds, so this only frees.
        with trio.CancelScope(shield=True):
            await self._framed.aclose()


class _EventIterator:
    """`async for event in client.events()`: ends after `aclose()`, raises the failure if
    the connection failed."""

    def __init__(self, client: TrioClient) -> None:
        self._client = client

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> Event:
        client = self._client
        try:
            return await client._event_receive.receive()
        except trio.EndOfChannel:
            failure = client._failure
            if failure is not None and not client._closed:
                raise failure from None
            raise StopAsyncIteration from None


@asynccontextmanager
async def connect_stream(
    stream: trio.abc.Stream,
    client_name: str,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
) -> AsyncIterator[TrioClient]:
    """A client over an already connected stream (any `trio.abc.Stream`; fds only over a
    Unix `trio.SocketStream`). Does the hello exchange, runs the reader task for the
    duration of the block, and closes the stream on exit."""
    framed = FramedStream(stream, Connection(Role.CLIENT, max_frame=max_frame))
    try:
        welcome = await framed.hello(client_name)
    except BaseException:
        with trio.CancelScope(shield=True):
            await framed.aclose()
        raise
    client = TrioClient(framed, welcome, event_buffer=event_buffer, send_timeout=send_timeout)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._reader)
            try:
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The reader never raises, so a group holds what the body raised; give it back
        # as it was raised rather than wrapped.
        if len(group.exceptions) != 1:
            raise
        body_error = group.exceptions[0]
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def open_client(
    path: str | os.PathLike[str],
    client_name: str,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    event_buffer: int = DEFAULT_EVENT_BUFFER,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
) -> AsyncIterator[TrioClient]:
    """Connect to the daemon's Unix socket at `path` and yield a welcomed `TrioClient`.

    Raises:
        DaemonUnreachable / PermissionDenied: connecting failed.
        RemoteError: the daemon refused the hello.
    """
    path = os.fspath(path)
    try:
        stream = await trio.open_unix_socket(path)
    except OSError as exc:
        raise connect_error(exc, path) from None
    async with connect_stream(
        stream,
        client_name,
        max_frame=max_frame,
        event_buffer=event_buffer,
        send_timeout=send_timeout,
    ) as client:
        yield client
