"""The blocking client: one Unix-socket connection to luod, for `luoctl` and scripts.

Owns the synchronous I/O loop around the sans-IO `Connection`: connect and the hello
exchange, request/reply with file descriptors, and events. It sits on `luoctl`'s start-up
path, so it imports only the stdlib, cbor2 and attrs (cattrs is loaded by `luod.ipc.convert`
when a message first needs it); never trio, numpy or structlog.

Usage:

    with Client.connect("/run/luod/luod.sock", timeout=10, client_name="luoctl") as c:
        reply = c.call("session.create", {"name": "vm1"})
        print(reply.result)
        for event in c.events():           # e.g. `luoctl events --follow`
            ...

Behaviour worth knowing:

* Events may arrive between a request and its reply. `call` buffers them (at most
  `event_buffer`; when full the oldest is dropped and `events_dropped` counts it) and
  `events()` yields the buffered ones first.
* `call` raises `RemoteError` for an `error` reply; the connection stays usable. An `error`
  with a null id (a connection-level refusal) also raises `RemoteError`, and the client is
  then closed. A protocol violation by the daemon raises `RemoteProtocolError` and closes.
* Timeouts: `timeout` given to `connect` is the default for connecting, the hello exchange
  and every call; `call(timeout=...)` overrides it (None waits forever). A timeout while
  waiting raises `DaemonTimeout` and leaves the connection usable (the late reply is
  dropped when it arrives, its fds closed); a timeout while sending closes the client,
  since part of a frame may have been written.
* Received fds (`Reply.fds`) belong to the caller, who must close them.
* Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import collections
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Final

from luod.ipc.connection import CLOSED, NEED_DATA, Connection
from luod.ipc.errors import (
    ConnectionLost,
    DaemonTimeout,
    DaemonUnreachable,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    connect_error,
)
from luod.ipc.fdpass import close_fds, recv_with_fds, send_with_fds
from luod.ipc.framing import DEFAULT_MAX_FRAME, HEADER_SIZE
from luod.ipc.limits import DEFAULT_TIMEOUT
from luod.ipc.messages import (
    MAX_FDS_PER_MESSAGE,
    MAX_ID,
    PROTOCOL_VERSION,
    ErrorReply,
    Event,
    Hello,
    Message,
    Reply,
    Request,
    Welcome,
)
from luod.ipc.state import Role

__all__ = [
    "DEFAULT_TIMEOUT",
    "Client",
    "ConnectionLost",
    "DaemonTimeout",
    "DaemonUnreachable",
    "PermissionDenied",
    "RemoteError",
    "Reply",
]

_RECV_SIZE: Final = 64 * 1024


class _UseDefault:
    """Marker type for "the client's default timeout" (distinct from None: no timeout)."""


_DEFAULT: Final = _UseDefault()


class Client:
    """A blocking connection to luod. Create it with `Client.connect` (or `from_socket`)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        event_buffer: int = 1024,
    ) -> None:
        """Wrap a connected socket; no hello is sent (`handshake` does that)."""
        self._sock = sock
        self._conn = Connection(Role.CLIENT, max_frame=max_frame)
        # Never read more than one maximal frame at a time: see FrameDecoder.max_buffer.
        self._recv_size = min(_RECV_SIZE, max_frame + HEADER_SIZE)
        self.timeout = timeout
        self._events: collections.deque[Event] = collections.deque(maxlen=event_buffer)
        self.events_dropped = 0
        self._next_id = 1
        self._closed = False
        self.server_name: str | None = None
        self.version: int | None = None

    # --- construction --------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        client_name: str = "luoctl",
        max_frame: int = DEFAULT_MAX_FRAME,
        event_buffer: int = 1024,
    ) -> Client:
        """Connect to the daemon's socket at `path` and do the hello exchange.

        Raises:
            DaemonUnreachable: no socket, nothing listening, or another connect error.
            PermissionDenied: the socket's permissions refuse us.
            DaemonTimeout: connecting or the hello exchange took longer than `timeout`.
            RemoteError: the daemon refused the hello (e.g. `luod.ProtocolVersion`).
            RemoteProtocolError: the daemon answered with garbage.
        """
        path = os.fspath(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError:
            sock.close()
            raise DaemonTimeout(f"timed out connecting to {path}") from None
        except OSError as exc:
            sock.close()
            raise connect_error(exc, path) from None
        client = cls(sock, timeout=timeout, max_frame=max_frame, event_buffer=event_buffer)
        try:
            client.handshake(client_name)
        except BaseException:
            client.close()
            raise
        return client

    @classmethod
    def from_socket(
        cls,
        sock: socket.socket,
        *,
        client_name: str = "luoctl",
        timeout: float | None = DEFAULT_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        event_buffer: int = 1024,
    ) -> Client:
        """A client over an already connected Unix stream socket (the client takes it
        over); does the hello exchange. Raises as `connect` does after connecting."""
        client = cls(sock, timeout=timeout, max_frame=max_frame, event_buffer=event_buffer)
        try:
            client.handshake(client_name)
        except BaseException:
            client.close()
            raise
        return client

    def handshake(self, client_name: str, *, version: int = PROTOCOL_VERSION) -> Welcome:
        """Send `hello` and wait for `welcome`; `connect` calls this for you."""
        deadline = self._deadline(_DEFAULT)
        self._send(Hello(version=version, client=client_name), deadline)
        message = self._read(deadline)
        if isinstance(message, ErrorReply):
            self._fail_connection_level(message)
        if not isinstance(message, Welcome):  # the Connection lets nothing else through
            raise AssertionError(f"unexpected {message!r} during the hello exchange")
        self.server_name = message.server
        self.version = message.version
        return message

    # --- requests ------------------------------------------------------------------------

    def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        fds: Sequence[int] = (),
        timeout: float | _UseDefault | None = _DEFAULT,
    ) -> Reply:
        """Call `method` with `params` (and `fds`, sent with SCM_RIGHTS); wait for the reply.

        Returns the `Reply`: `.result` is the method's result, `.fds` the fds it carried
        (the caller owns them). Events received meanwhile are buffered for `events()`.

        Raises:
            RemoteError: the daemon answered with an `error`.
            DaemonTimeout: no reply within the timeout.
            ConnectionLost: the daemon closed the connection.
            LocalProtocolError: the request cannot be encoded (e.g. over the frame cap).
            RemoteProtocolError: the daemon broke the protocol (the client is closed).
        """
        deadline = self._deadline(timeout)
        request_id = self._allocate_id()
        request = Request(id=request_id, method=method, params=dict(params or {}), fds=fds)
        self._send(request, deadline)
        while True:
            message = self._read(deadline)
            if isinstance(message, Event):
                self._buffer_event(message)
            elif isinstance(message, Reply | ErrorReply) and message.id == request_id:
                if isinstance(message, ErrorReply):
                    raise RemoteError(message.error, request_id=request_id, method=method)
                return message
            elif isinstance(message, ErrorReply) and message.id is None:
                self._fail_connection_level(message)
            else:
                self._drop_late(message)

    # --- events --------------------------------------------------------------------------

    def events(self, *, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they arrive (buffered ones first), forever.

        `timeout` bounds each wait for the next event (None: wait forever).

        Raises:
            ConnectionLost: the daemon closed the connection.
            DaemonTimeout: no event within `timeout`.
            RemoteError: a connection-level `error` from the daemon (the client is closed).
        """
        while True:
            while self._events:
                yield self._events.popleft()
            message = self._read(self._deadline(timeout))
            if isinstance(message, Event):
                yield message
            elif isinstance(message, ErrorReply) and message.id is None:
                self._fail_connection_level(message)
            else:
                self._drop_late(message)

    @property
    def buffered_events(self) -> int:
        """Events received and not yet consumed through `events()`."""
        return len(self._events)

    # --- lifetime ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """Close the socket and every fd received but never handed out. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._conn.close()
        close_fds(self._conn.take_unclaimed_fds())
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------

    def _deadline(self, timeout: float | _UseDefault | None) -> float | None:
        if isinstance(timeout, _UseDefault):
            timeout = self.timeout
        return None if timeout is None else time.monotonic() + timeout

    def _settimeout(self, deadline: float | None) -> None:
        if deadline is None:
            self._sock.settimeout(None)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DaemonTimeout("timed out waiting for luod")
        self._sock.settimeout(remaining)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionLost("the client is closed")

    def _allocate_id(self) -> int:
        in_flight = self._conn.in_flight
        while True:
            request_id = self._next_id
            self._next_id = 0 if request_id == MAX_ID else request_id + 1
            if request_id not in in_flight:
                return request_id

    def _send(self, message: Message, deadline: float | None) -> None:
        self._check_open()
        data = self._conn.send(message)  # LocalProtocolError: nothing was sent
        fds = message.fds if isinstance(message, Request) else ()
        try:
            self._settimeout(deadline)
            send_with_fds(self._sock, data, fds)
        except TimeoutError:
            self.close()  # part of the frame may be out: the stream is unusable
            raise DaemonTimeout("timed out sending to luod") from None
        except OSError as exc:
            self.close()
            raise ConnectionLost(f"connection to luod lost while sending: {exc}") from None

    def _read(self, deadline: float | None) -> Message:
        """The next message from the daemon, reading as needed."""
        self._check_open()
        while True:
            try:
                event = self._conn.next_event()
            except ProtocolError:
                self.close()
                raise
            if event is CLOSED:
                self.close()
                raise ConnectionLost("luod closed the connection")
            if event is not NEED_DATA:
                return event
            try:
                self._settimeout(deadline)
                data, fds = recv_with_fds(self._sock, self._recv_size, MAX_FDS_PER_MESSAGE)
            except TimeoutError:
                raise DaemonTimeout("timed out waiting for luod") from None
            except RemoteProtocolError:  # fds truncated: the stream is unusable
                self.close()
                raise
            except OSError as exc:
                self.close()
                raise ConnectionLost(f"connection to luod lost: {exc}") from None
            self._conn.receive_data(data, fds)

    def _buffer_event(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1
        self._events.append(event)

    def _drop_late(self, message: Message) -> None:
        # A reply to a request whose caller gave up (timeout): nobody will use it.
        if isinstance(message, Reply):
            close_fds(message.fds)

    def _fail_connection_level(self, message: ErrorReply) -> None:
        self.close()
        raise RemoteError(message.error)
