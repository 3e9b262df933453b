"""The sans-IO protocol connection: bytes and fds in, envelopes out, and the reverse.

Owns the protocol's state machine for one connection, from either end, in the style of h11:

    conn = Connection(Role.SERVER)
    conn.receive_data(data, fds)         # what the socket gave us; b"" means EOF
    event = conn.next_event()            # a Message, NEED_DATA or CLOSED
    data = conn.send(message)            # bytes to write (with message.fds, if any)

No I/O, no clock, no threads: adapters (`luod.ipc.client`, `luod.ipc.trio_stream`) move the
bytes and the file descriptors. Everything that can go wrong is a named `ProtocolError`.

Theory of operation
-------------------
Each side of the connection has a `State`:

* START: the side has not sent its handshake message (`hello` for the client, `welcome` for
  the server).
* OPEN: handshake sent; requests (client), replies and events (server) may flow.
* CLOSED: their side: the stream ended cleanly between frames. Our side: `close()` was
  called.
* ERROR: a protocol error was detected on that side. It is sticky: `next_event()` raises
  the same `RemoteProtocolError` forever once their side is in ERROR, `send()` raises the
  same `LocalProtocolError` forever once ours is.

Rules (violations by the peer are `RemoteProtocolError`, by us `LocalProtocolError`):

1. The client's first message is `hello`; a server receiving anything else fails with
   `luod.HelloRequired`. A `hello` whose version is not in `supported_versions` fails with
   `luod.ProtocolVersion`; the server should then send `error_reply(exc, None)` (still
   allowed in that state) and close.
2. The server answers with `welcome` carrying the negotiated version (the client's). The
   client may send requests only once the welcome was received: no pipelining behind
   `hello`, so a refused version never has requests queued behind it.
3. Request ids are chosen by the client and must be unique among the requests in flight;
   both roles track the ids in flight. A server may reply (or send an `error` with that
   id) only to a request in flight, exactly once. A client receiving a reply whose id it
   is not waiting for fails with `luod.BadMessage`: replies are never silently dropped, so
   an id mix-up is found where it happens. (A client that gives up waiting for a reply
   still has the id in flight here; dropping the late reply is the adapter's business.)
4. `event` messages flow server → client at any time after the welcome; `error` with a
   null id is a connection-level error after which the server closes.
5. `send()` checks and encodes the message before it changes any state: a message that
   cannot be encoded (outside the data model, over the frame cap, fds not matching
   `nfds`) raises `LocalProtocolError` and leaves the connection usable, so the daemon
   can still answer that request with an `error`. A message the state machine forbids
   puts our side in ERROR.

File descriptors
----------------
Design choice: messages carry their fds (`Request.fds`, `Reply.fds`), see
`luod.ipc.messages`. On the receiving side the connection owns every fd handed to
`receive_data` until a message claims it; `next_event()` attaches them and the caller owns
them from then on. Whatever was never claimed (the peer closed, or broke the protocol) is
given back by `take_unclaimed_fds()`; adapters close those when they close the socket.

Attribution is checked as tightly as the socket API allows. The rule for senders: the fds
of a message travel with the `sendmsg` call that carries the first byte of its frame. The
kernel never merges the fds of two `sendmsg` calls into one `recvmsg`, so fds received
with a chunk of bytes [S, E) belong to a frame that starts inside that chunk. Hence:

* a frame starting at offset F may claim only fds that arrived with a chunk that started
  at or before F (else they belong to a later frame): short → `luod.MissingFds`;
* fds that arrived with a chunk that ended at or before F and were not claimed by a frame
  starting in that chunk belong to no message: `luod.BadMessage`. A stray fd is never
  quietly given to the next message that declares one.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable
from typing import Final, Literal

import attrs

from luod.errnos import errno_name
from luod.ipc.convert import encode_message, structure_message, unstructure_message
from luod.ipc.errors import (
    ErrorInfo,
    LocalProtocolError,
    ProtocolErrorName,
    RemoteProtocolError,
)
from luod.ipc.framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    decode_item,
    encode_frame,
    frame_body,
)
from luod.ipc.messages import (
    MAX_FDS_PER_MESSAGE,
    SUPPORTED_VERSIONS,
    ErrorReply,
    Event,
    Hello,
    Message,
    Reply,
    Request,
    Welcome,
)

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "Connection",
    "Role",
    "Sentinel",
    "State",
    "error_info",
    "error_reply",
]


class Role(enum.Enum):
    """Which end of the connection this object plays."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """The state of one side of a connection (see the module docstring)."""

    START = "start"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Sentinel(enum.Enum):
    """Non-message results of `Connection.next_event`."""

    NEED_DATA = "need-data"
    """No complete message is buffered: read more and call `receive_data`."""
    CLOSED = "closed"
    """The peer closed the stream cleanly; no message will ever come again."""

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = Sentinel.NEED_DATA
CLOSED: Final = Sentinel.CLOSED

# Generous bound on fds received but not yet claimed: a well-behaved peer has at most one
# partial frame with its fds outstanding when the adapter reads (it reads only on
# NEED_DATA), i.e. at most MAX_FDS_PER_MESSAGE.
_MAX_PENDING_FDS: Final = 2 * MAX_FDS_PER_MESSAGE


def _kind(message: Message) -> str:
    return message.KIND


class Connection:
    """One protocol connection seen from `role`'s end. See the module docstring.

    Args:
        role: `Role.CLIENT` or `Role.SERVER`.
        max_frame: cap on a frame body, received or sent (default 1 MiB).
        max_buffer: cap on buffered incoming bytes (see `FrameDecoder`).
        supported_versions: versions a server accepts in `hello`.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_buffer: int | None = None,
        supported_versions: Iterable[int] = SUPPORTED_VERSIONS,
    ) -> None:
        self.role = role
        self.max_frame = max_frame
        self.supported_versions = frozenset(supported_versions)
        self._decoder = FrameDecoder(max_frame, max_buffer)
        self._our_state = State.START
        self._their_state = State.START
        self._our_error: LocalProtocolError | None = None
        self._their_error: RemoteProtocolError | None = None
        # Pending fds with the stream offsets [start, end) of the chunk they came with.
        self._fds: collections.deque[tuple[int, int, int]] = collections.deque()
        self._fd_overflow = False
        self._in_flight: set[int] = set()
        self._version: int | None = None  # hello's version: sent (client) or accepted
        self._peer_name: str | None = None

    # --- inspection ----------------------------------------------------------------------

    @property
    def our_state(self) -> State:
        return self._our_state

    @property
    def their_state(self) -> State:
        return self._their_state

    @property
    def states(self) -> dict[Role, State]:
        """Both sides' states, keyed by role (as h11's `Connection.states`)."""
        them = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        return {self.role: self._our_state, them: self._their_state}

    @property
    def version(self) -> int | None:
        """The protocol version in use once negotiated (client: the one sent in hello)."""
        return self._version

    @property
    def peer_name(self) -> str | None:
        """The `client` of the hello (server role) or the `server` of the welcome."""
        return self._peer_name

    @property
    def in_flight(self) -> frozenset[int]:
        """Ids of requests sent (client) or received (server) and not answered yet."""
        return frozenset(self._in_flight)

    @property
    def pending_fds(self) -> int:
        """Fds received and not yet claimed by a message."""
        return len(self._fds)

    # --- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, fds: Iterable[int] = ()) -> None:
        """Feed bytes (and the fds received with them) from the peer; `b""` means EOF.

        The connection owns `fds` from now on, until a message claims them or
        `take_unclaimed_fds()` hands them back.

        Raises:
            LocalProtocolError: `luod.ConnectionClosed` if data follows the EOF.
        """
        if fds:
            start = self._decoder.received
            end = start + len(data)
            self._fds.extend((fd, start, end) for fd in fds)
            if len(self._fds) > _MAX_PENDING_FDS:
                self._fd_overflow = True
        self._decoder.receive_data(data)

    def next_event(self) -> Message | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        """The next message from the peer, `NEED_DATA`, or `CLOSED` (clean EOF).

        Raises:
            RemoteProtocolError: the peer broke the protocol; their side is now in ERROR
                and every later call raises the same error.
        """
        if self._their_error is not None:
            raise self._their_error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._their_state = State.ERROR
            self._their_error = exc
            raise

    def _next_event(self) -> Message | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._their_state is State.CLOSED:
            return CLOSED
        if self._fd_overflow:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE,
                f"more than {_MAX_PENDING_FDS} file descriptors received ahead of messages",
            )
        decoder = self._decoder
        start = decoder.consumed
        frame = decoder.next_frame()
        if frame is None:
            if decoder.eof:
                self._their_state = State.CLOSED
                return CLOSED
            return NEED_DATA
        if self._fds:
            self._check_stray_fds(start)
        message = structure_message(decode_item(frame))
        self._receive_transition(message)
        if isinstance(message, Request | Reply) and message.nfds:
            message = attrs.evolve(message, fds=self._claim_fds(message, start))
        return message

    def _check_stray_fds(self, frame_start: int) -> None:
        strays = 0
        for _fd, _start, end in self._fds:
            if end > frame_start:
                break
            strays += 1
        if strays:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE,
                f"{strays} file descriptor(s) arrived that no message declared",
            )

    def _claim_fds(self, message: Request | Reply, frame_start: int) -> tuple[int, ...]:
        wanted = message.nfds
        usable = 0
        for _fd, start, _end in self._fds:
            if usable == wanted or start > frame_start:
                break
            usable += 1
        if usable < wanted:
            raise RemoteProtocolError(
                ProtocolErrorName.MISSING_FDS,
                f"{_kind(message)} {message.id} declares {wanted} file descriptor(s) "
                f"but {usable} arrived with it",
            )
        return tuple(self._fds.popleft()[0] for _ in range(wanted))

    def _receive_transition(self, message: Message) -> None:
        kind = message.KIND
        if self.role is Role.SERVER:
            if self._their_state is State.START:
                if not isinstance(message, Hello):
                    raise RemoteProtocolError(
                        ProtocolErrorName.HELLO_REQUIRED,
                        f"the first message must be hello, got {kind}",
                    )
                if message.version not in self.supported_versions:
                    supported = ", ".join(map(str, sorted(self.supported_versions)))
                    raise RemoteProtocolError(
                        ProtocolErrorName.PROTOCOL_VERSION,
                        f"protocol version {message.version} is not supported "
                        f"(this server speaks {supported})",
                    )
                self._version = message.version
                self._peer_name = message.client
                self._their_state = State.OPEN
                return
            if isinstance(message, Request):
                if message.id in self._in_flight:
                    raise RemoteProtocolError(
                        ProtocolErrorName.BAD_MESSAGE,
                        f"request id {message.id} is already in flight",
                    )
                self._in_flight.add(message.id)
                return
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE, f"a client may not send {kind} here"
            )

        # Client role: the peer is the server.
        if self._our_state is State.START:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE, f"the server sent {kind} before our hello"
            )
        if isinstance(message, ErrorReply) and message.id is None:
            return  # connection-level error, allowed at any time; the server will close
        if self._their_state is State.START:
            if not isinstance(message, Welcome):
                raise RemoteProtocolError(
                    ProtocolErrorName.BAD_MESSAGE, f"expected welcome, got {kind}"
                )
            if message.version != self._version:
                raise RemoteProtocolError(
                    ProtocolErrorName.PROTOCOL_VERSION,
                    f"the server answered with protocol version {message.version}, "
                    f"we asked for {self._version}",
                )
            self._peer_name = message.server
            self._their_state = State.OPEN
            return
        if isinstance(message, Event):
            return
        if isinstance(message, Reply | ErrorReply):
            assert message.id is not None
            if message.id not in self._in_flight:
                raise RemoteProtocolError(
                    ProtocolErrorName.BAD_MESSAGE,
                    f"{kind} for request id {message.id}, which is not in flight",
                )
            self._in_flight.discard(message.id)
            return
        raise RemoteProtocolError(
            ProtocolErrorName.BAD_MESSAGE, f"a server may not send {kind} here"
        )

    def take_unclaimed_fds(self) -> list[int]:
        """Hand back (and forget) every received fd no message has claimed; the caller
        must close them. Adapters call this when closing the connection or after an error.
        """
        fds = [fd for fd, _start, _end in self._fds]
        self._fds.clear()
        return fds

    # --- sending -------------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Encode `message` as one frame for the peer and advance our state.

        For `Request` and `Reply`, `nfds` on the wire is the number of attached `fds`; the
        adapter must send `message.fds` with the first byte of the returned bytes.

        Raises:
            LocalProtocolError: the message cannot be encoded (state unchanged), or the
                protocol forbids it now (our side goes to ERROR, sticky).
        """
        if self._our_error is not None:
            raise self._our_error
        if self._our_state is State.CLOSED:
            raise LocalProtocolError(
                ProtocolErrorName.CONNECTION_CLOSED, "the connection was closed on our side"
            )
        if isinstance(message, Request | Reply) and message.nfds != len(message.fds):
            raise LocalProtocolError(
                ProtocolErrorName.MISSING_FDS,
                f"{_kind(message)} {message.id} declares {message.nfds} file descriptor(s) "
                f"but carries {len(message.fds)}",
            )
        body = encode_message(message)  # the common case: already in the data model
        if body is not None:
            data = frame_body(body, max_frame=self.max_frame)
        else:
            data = encode_frame(unstructure_message(message), max_frame=self.max_frame)
        try:
            self._send_transition(message)
        except LocalProtocolError as exc:
            self._our_state = State.ERROR
            self._our_error = exc
            raise
        return data

    def _send_transition(self, message: Message) -> None:
        kind = message.KIND

        def forbidden(why: str, name: ProtocolErrorName = ProtocolErrorName.BAD_MESSAGE) -> None:
            raise LocalProtocolError(name, f"cannot send {kind}: {why}")

        if self.role is Role.CLIENT:
            if isinstance(message, Hello):
                if self._our_state is not State.START:
                    forbidden("hello was already sent")
                self._version = message.version
                self._our_state = State.OPEN
            elif isinstance(message, Request):
                if self._our_state is not State.OPEN or self._their_state is not State.OPEN:
                    forbidden(
                        "requests may follow only a completed hello/welcome exchange",
                        ProtocolErrorName.HELLO_REQUIRED,
                    )
                if message.id in self._in_flight:
                    forbidden(f"request id {message.id} is already in flight")
                self._in_flight.add(message.id)
            else:
                forbidden("a client sends only hello and requests")
            return

        # Server role.
        if isinstance(message, ErrorReply) and message.id is None:
            return  # connection-level error: allowed in any state, even before welcome
        if self._their_state is State.ERROR and not isinstance(message, ErrorReply):
            forbidden("the client broke the protocol; only error replies may follow")
        if isinstance(message, Welcome):
            if self._our_state is not State.START:
                forbidden("welcome was already sent")
            if self._their_state is not State.OPEN:
                forbidden("no acceptable hello was received", ProtocolErrorName.HELLO_REQUIRED)
            if message.version != self._version:
                forbidden(f"the client asked for version {self._version}")
            self._our_state = State.OPEN
            return
        if self._our_state is not State.OPEN:
            forbidden("welcome must be sent first", ProtocolErrorName.HELLO_REQUIRED)
        if isinstance(message, Reply | ErrorReply):
            assert message.id is not None
            if message.id not in self._in_flight:
                forbidden(f"no request with id {message.id} is in flight")
            self._in_flight.discard(message.id)
        elif not isinstance(message, Event):
            forbidden("a server sends only welcome, replies, errors and events")

    def close(self) -> None:
        """Mark our side closed: nothing more may be sent. Received messages that are
        already buffered can still be read."""
        if self._our_state is not State.ERROR:
            self._our_state = State.CLOSED


# --- error replies -------------------------------------------------------------------------


def error_info(exc: object) -> ErrorInfo:
    """The wire form of any error object.

    Reads the attributes `name`, `errno`, `message` and `object` (or `obj`), so it takes a
    `ProtocolError` as well as the kernel model's errors:

    * `name` is used as is if qualified (contains a dot), else prefixed with `luod.`
      (the kernel model's class names); missing → `luod.InternalError`;
    * `errno` may be symbolic (`"EBUSY"`), numeric (`16` → `"EBUSY"`) or None;
    * `message` falls back to `str(exc)`; `object`/`obj` must be a str or None.
    """
    name = getattr(exc, "name", None)
    if not isinstance(name, str) or not name:
        name = "luod.InternalError"
    elif "." not in name:
        name = f"luod.{name}"
    raw_errno = getattr(exc, "errno", None)
    errno_text: str | None
    if isinstance(raw_errno, bool):
        errno_text = None
    elif isinstance(raw_errno, int):
        errno_text = errno_name(raw_errno)
    elif isinstance(raw_errno, str):
        errno_text = raw_errno
    else:
        errno_text = None
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    obj = getattr(exc, "object", None)
    if obj is None:
        obj = getattr(exc, "obj", None)
    return ErrorInfo(
        name=str(name),
        errno=errno_text,
        message=message,
        object=obj if isinstance(obj, str) else None if obj is None else str(obj),
    )


def error_reply(exc: object, id: int | None) -> ErrorReply:
    """An `error` envelope for request `id` (None: connection-level) from any error object
    with name/errno/message/object attributes (see `error_info`)."""
    return ErrorReply(id=id, error=error_info(exc))
