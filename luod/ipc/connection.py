"""The sans-IO protocol connection: bytes and fds in, envelopes out, and the reverse.

Owns one connection's data path, from either end, in the style of h11:

    conn = Connection(Role.SERVER)
    conn.receive_data(data, fds)         # what the socket gave us; b"" means EOF
    event = conn.next_event()            # a Message, NEED_DATA or CLOSED
    data = conn.send(message)            # bytes to write (with message.fds, if any)

No I/O, no clock, no threads: adapters (`luod.ipc.client`, `luod.ipc.async_transport`)
move the bytes and the file descriptors. Everything that can go wrong is a named
`ProtocolError`. A received frame is split off (`luod.ipc.framing`), decoded
(`luod.ipc.cbor`), structured (`luod.ipc.envelope`), checked against the state machine
(`luod.ipc.state`, which says what may be sent when) and given its fds
(`luod.ipc.fd_attribution`, which says which fds belong to which message); sending runs
the same steps backwards. Errors are sticky here: once a side is in ERROR, the same error
is raised forever.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final, Literal

import attrs

from luod.ipc.cbor import decode_item, encode_message
from luod.ipc.envelope import structure_message, unstructure_message
from luod.ipc.errors import (
    LocalProtocolError,
    ProtocolError,
    ProtocolErrorName,
    RemoteProtocolError,
)
from luod.ipc.fd_attribution import PendingFds
from luod.ipc.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, frame_body
from luod.ipc.messages import SUPPORTED_VERSIONS, ErrorReply, Message, Reply, Request
from luod.ipc.state import ConnectionState, Moot, Role, State

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "Connection",
    "Sentinel",
    "error_reply",
]


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
        self._state = ConnectionState(role, supported_versions)
        self._decoder = FrameDecoder(max_frame, max_buffer)
        self._our_error: LocalProtocolError | None = None
        self._their_error: RemoteProtocolError | None = None
        self._fds = PendingFds()

    # --- inspection ----------------------------------------------------------------------

    @property
    def supported_versions(self) -> frozenset[int]:
        """Versions a server accepts in `hello`."""
        return self._state.supported_versions

    @property
    def our_state(self) -> State:
        return self._state.ours

    @property
    def their_state(self) -> State:
        return self._state.theirs

    @property
    def states(self) -> dict[Role, State]:
        """Both sides' states, keyed by role (as h11's `Connection.states`)."""
        them = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        return {self.role: self._state.ours, them: self._state.theirs}

    @property
    def version(self) -> int | None:
        """The protocol version in use once negotiated (client: the one sent in hello)."""
        return self._state.version

    @property
    def peer_name(self) -> str | None:
        """The `client` of the hello (server role) or the `server` of the welcome."""
        return self._state.peer_name

    @property
    def in_flight(self) -> frozenset[int]:
        """Ids of requests sent (client) or received (server) and not answered yet."""
        return frozenset(self._state.in_flight)

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
            self._fds.add(fds, start, start + len(data))
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
            self._state.theirs = State.ERROR
            self._their_error = exc
            raise

    def _next_event(self) -> Message | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        state = self._state
        if state.theirs is State.CLOSED:
            return CLOSED
        pending = self._fds
        if pending.overflow:
            raise pending.overflow_error()
        decoder = self._decoder
        start = decoder.consumed
        frame = decoder.next_frame()
        if frame is None:
            if decoder.eof:
                state.theirs = State.CLOSED
                return CLOSED
            return NEED_DATA
        if pending.entries:
            pending.check_strays(start)
        message = structure_message(decode_item(frame))
        state.received(message)
        if not isinstance(message, Request | Reply):
            if pending.entries:
                pending.check_undeclared(decoder.consumed, 0)
            return message
        if pending.entries:
            pending.check_undeclared(decoder.consumed, message.nfds)
        if message.nfds:
            message = attrs.evolve(message, fds=pending.claim(message, start))
        return message

    def take_unclaimed_fds(self) -> list[int]:
        """Hand back (and forget) every received fd no message has claimed; the caller
        must close them. Adapters call this when closing the connection or after an error.
        """
        return self._fds.take_all()

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
        if self._state.ours is State.CLOSED:
            raise LocalProtocolError(
                ProtocolErrorName.CONNECTION_CLOSED, "the connection was closed on our side"
            )
        if isinstance(message, Request | Reply) and message.nfds != len(message.fds):
            raise LocalProtocolError(
                ProtocolErrorName.MISSING_FDS,
                f"{message.KIND} {message.id} declares {message.nfds} file descriptor(s) "
                f"but carries {len(message.fds)}",
            )
        body = encode_message(message)  # the common case: already in the data model
        if body is not None:
            data = frame_body(body, max_frame=self.max_frame)
        else:
            data = encode_frame(unstructure_message(message), max_frame=self.max_frame)
        try:
            self._state.sent(message)
        except Moot:
            raise
        except LocalProtocolError as exc:
            self._state.ours = State.ERROR
            self._our_error = exc
            raise
        return data

    def close(self) -> None:
        """Mark our side closed: nothing more may be sent. Received messages that are
        already buffered can still be read."""
        if self._state.ours is not State.ERROR:
            self._state.ours = State.CLOSED


def error_reply(exc: ProtocolError, id: int | None) -> ErrorReply:
    """The `error` envelope a protocol error is answered with, for request `id` (None:
    connection-level). What the daemon answers for its own and the kernel's errors is
    `luod.daemon.errors.wire_error`: the one mapping of any exception."""
    return ErrorReply(id=id, error=exc.info())
