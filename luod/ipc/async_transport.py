"""The trio adapter: a sans-IO `Connection` driven over a trio byte stream, with fds.

Owns the async I/O loop shared by the daemon (server role) and by trio participants
(client role, through `luod.ipc.async_client`): read until a message is complete, write
frames, and pass file descriptors with SCM_RIGHTS when the stream is a real Unix socket.

Two kinds of streams are accepted:

* a `trio.SocketStream` over an AF_UNIX socket: bytes and fds go through the socket's
  `sendmsg`/`recvmsg` (trio has no fd-passing helpers of its own), received fds are
  close-on-exec, and `peer_credentials()` works. This is the daemon's request path, so it
  calls the non-blocking stdlib socket directly and parks in `trio.lowlevel.wait_readable`
  / `wait_writable` only when the call would block: trio's socket methods pass through
  the scheduler after every call, which costs more than a small request. A send that fits
  in the socket buffer is therefore not a schedule point (it still raises if cancelled);
  every read is one, as is `receive()` at least every `CHECKPOINT_EVERY` messages;
* any other `trio.abc.Stream` (`trio.testing.memory_stream_pair()`, a TLS stream...):
  only `send_all`/`receive_some` are used, so everything works except fd passing, which
  raises `LocalProtocolError` (`luod.MissingFds`) before anything is sent.

Sending must be serialised: exactly one task may be in `send()` at a time (one writer task
fed by a channel, or a `trio.Lock`). trio's own conflict detection does not cover raw
`sendmsg` calls, so `FramedStream` checks itself and raises `trio.BusyResourceError`
rather than interleave two frames. A send interrupted half-way (cancellation, error) leaves
a partial frame on the wire; the stream is then broken and every later send raises
`trio.BrokenResourceError`. Callers that must survive cancellation shield their sends.

Receiving is done by one task too (`receive()`), as with any trio stream.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import socket as _stdlib_socket
from typing import Final, Literal

import trio

from luod.ipc.connection import CLOSED, NEED_DATA, Connection, Sentinel, error_reply
from luod.ipc.errors import (
    ConnectionLost,
    LocalProtocolError,
    ProtocolError,
    ProtocolErrorName,
    RemoteError,
    RemoteProtocolError,
)
from luod.ipc.fdpass import (
    MSG_CMSG_CLOEXEC,
    UCRED_SIZE,
    PeerCredentials,
    ancillary_space,
    close_fds,
    decode_ucred,
    fds_ancillary,
    parse_fds,
)
from luod.ipc.framing import HEADER_SIZE
from luod.ipc.messages import (
    MAX_FDS_PER_MESSAGE,
    PROTOCOL_VERSION,
    ErrorReply,
    Hello,
    Message,
    Reply,
    Request,
    Welcome,
)

__all__ = ["CHECKPOINT_EVERY", "DEFAULT_RECEIVE_SIZE", "FramedStream"]

DEFAULT_RECEIVE_SIZE: Final = 64 * 1024

CHECKPOINT_EVERY: Final = 16
"""`receive` returns at most this many buffered messages between two checkpoints."""

# errnos meaning "this socket was closed under us" (as trio.SocketStream reads them).
_CLOSED_ERRNOS: Final = frozenset({_errno.EBADF, _errno.ENOTSOCK})


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """What a failed socket call means for the stream (as `trio.SocketStream` reads it)."""
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("the socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def _raw_socket(sock: trio.socket.SocketType) -> _stdlib_socket.socket | None:
    """The non-blocking stdlib socket wrapped by a trio socket, or None if unavailable.

    trio's socket methods go through the scheduler after every successful call (and build
    a context manager for it), which is most of the cost of a small request. The adapter
    therefore calls the stdlib socket directly and waits with `trio.lowlevel.wait_readable`
    / `wait_writable` only when the call would block. trio keeps the wrapped socket in the
    private attribute `_sock`; if a trio release changes that, the adapter falls back to
    the public methods.
    """
    raw = getattr(sock, "_sock", None)
    if isinstance(raw, _stdlib_socket.socket) and raw.fileno() == sock.fileno():
        return raw
    return None  # pragma: no cover


class FramedStream:
    """A `Connection` plus the trio stream it talks over.

    Args:
        stream: the byte stream; a `trio.SocketStream` on an AF_UNIX socket enables fds.
        connection: the sans-IO connection (its role decides client or server rules).
        receive_size: bytes asked for per read (at most `max_frame + 4`, see FrameDecoder).
        max_fds_per_read: fds accepted per read; more makes the read fail (MSG_CTRUNC).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: Connection,
        *,
        receive_size: int = DEFAULT_RECEIVE_SIZE,
        max_fds_per_read: int = MAX_FDS_PER_MESSAGE,
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.receive_size = min(receive_size, connection.max_frame + HEADER_SIZE)
        self.max_fds_per_read = max_fds_per_read
        sock = getattr(stream, "socket", None)
        self._socket: trio.socket.SocketType | None = (
            sock
            if isinstance(sock, trio.socket.SocketType) and sock.family == _stdlib_socket.AF_UNIX
            else None
        )
        # The stdlib socket under the trio one, for the fast paths (see `_raw_socket`).
        self._raw = _raw_socket(self._socket) if self._socket is not None else None
        self._ancillary_space = ancillary_space(max_fds_per_read)
        self._drained = False  # the last read emptied the socket
        self._unchecked = 0  # messages returned since the last checkpoint
        self._sending = False
        self._send_broken = False
        self._receive_error: RemoteProtocolError | None = None

    @property
    def can_pass_fds(self) -> bool:
        """True when the stream is a Unix socket, so messages may carry fds."""
        return self._socket is not None

    def peer_credentials(self) -> PeerCredentials:
        """The peer's pid/uid/gid (SO_PEERCRED). Raises RuntimeError without a Unix socket."""
        if self._socket is None:
            raise RuntimeError("peer credentials need a Unix socket stream")
        raw = self._socket.getsockopt(
            _stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_PEERCRED, UCRED_SIZE
        )
        return decode_ucred(raw)

    # --- sending -------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Encode and write `message` (with its fds, if any). One task at a time.

        Raises:
            LocalProtocolError: the connection refuses the message (see `Connection.send`),
                or it carries fds and the stream cannot pass them. Nothing was sent.
            trio.BusyResourceError: another task is sending.
            trio.BrokenResourceError: the stream broke (now or in an earlier send).
            trio.ClosedResourceError: the stream was closed.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        if self._send_broken:
            raise trio.BrokenResourceError("an earlier send was interrupted mid-frame")
        fds = message.fds if isinstance(message, Request | Reply) else ()
        if fds and self._socket is None:
            raise LocalProtocolError(
                ProtocolErrorName.MISSING_FDS,
                "this stream cannot pass file descriptors (not a Unix socket)",
            )
        raw = self._raw
        if raw is None or fds:
            data = self.connection.send(message)
        else:
            # The common case inline (no coroutine for it): one syscall that takes the
            # whole frame. Cancellation is checked before the connection's state changes.
            await trio.lowlevel.checkpoint_if_cancelled()
            data = self.connection.send(message)
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._send_broken = True
                raise _stream_error(exc) from exc
            if sent == len(data):
                return
            data = data[sent:]  # the rest waits for room below, as a partial frame
        self._sending = True
        completed = False
        try:
            if raw is not None:
                await self._send_raw(raw, data, fds)
            elif fds:  # pragma: no cover - every AF_UNIX trio socket has a raw socket
                assert self._socket is not None
                try:
                    sent = await self._socket.sendmsg([data], fds_ancillary(fds))
                except OSError as exc:
                    raise trio.BrokenResourceError(f"sendmsg failed: {exc}") from exc
                if sent < len(data):
                    await self.stream.send_all(memoryview(data)[sent:])
            else:
                await self.stream.send_all(data)
            completed = True
        finally:
            self._sending = False
            if not completed:
                self._send_broken = True

    async def _send_raw(
        self, raw: _stdlib_socket.socket, data: bytes, fds: tuple[int, ...]
    ) -> None:
        """Write `data` (fds with its first byte) on the non-blocking stdlib socket.

        The fast path of `send`: a frame that fits in the socket buffer (nearly all of
        them) costs one syscall and no trip through the scheduler; only a full buffer
        waits, in `wait_writable`, which is a checkpoint. Errors are translated as
        `trio.SocketStream` does.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            if fds:
                ancillary = fds_ancillary(fds)
                while True:
                    try:
                        sent = raw.sendmsg([data], ancillary)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(raw)
            else:
                try:
                    sent = raw.send(data)
                except BlockingIOError:
                    sent = 0
            if sent < len(data):
                with memoryview(data) as view:
                    rest = view[sent:]
                    while rest:
                        try:
                            sent = raw.send(rest)
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(raw)
                            continue
                        rest = rest[sent:]
        except OSError as exc:
            raise _stream_error(exc) from exc

    # --- receiving -----------------------------------------------------------------------

    async def receive(self) -> Message | Literal[Sentinel.CLOSED]:
        """The next message from the peer, or `CLOSED` when the peer closed cleanly.

        Every complete frame already buffered is returned without reading; a read takes
        whatever the socket has (up to `receive_size` bytes), so a burst of frames costs
        one read. A read is a checkpoint; so that a peer sending bursts cannot keep the
        receiving task from yielding, a call that returns a buffered frame is one too once
        every `CHECKPOINT_EVERY` calls.

        Raises:
            RemoteProtocolError: the peer broke the protocol (sticky).
            trio.BrokenResourceError / trio.ClosedResourceError: from the stream.
        """
        if self._receive_error is not None:
            raise self._receive_error
        if self._unchecked >= CHECKPOINT_EVERY:
            self._unchecked = 0
            await trio.lowlevel.checkpoint()  # nothing taken yet: cancelling loses nothing
        connection = self.connection
        raw = self._raw
        while True:
            event = connection.next_event()
            if event is not NEED_DATA:
                self._unchecked += 1
                return event
            if raw is None:
                try:
                    data, fds = await self._receive_some()
                except RemoteProtocolError as exc:  # fds truncated
                    self._receive_error = exc
                    raise
            else:
                # One recvmsg on the non-blocking stdlib socket, inline. Like trio's own
                # socket methods it is a checkpoint and passes through the scheduler once:
                # in `wait_readable` when the socket has nothing, else in a yield after
                # the read. When the previous read emptied the socket (returned less than
                # asked), the peer is most likely waiting for us, so wait first rather
                # than try a read that would fail.
                if self._drained:
                    await trio.lowlevel.wait_readable(raw)
                    waited = True
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    waited = False
                while True:
                    try:
                        data, ancdata, flags, _addr = raw.recvmsg(
                            self.receive_size, self._ancillary_space, MSG_CMSG_CLOEXEC
                        )
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(raw)
                        waited = True
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"recvmsg failed: {exc}") from exc
                self._drained = len(data) < self.receive_size
                try:
                    fds = parse_fds(ancdata, flags)
                except RemoteProtocolError as exc:  # fds truncated (and closed)
                    self._receive_error = exc
                    raise
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
            self._unchecked = 0
            connection.receive_data(data, fds)

    async def _receive_some(self) -> tuple[bytes, list[int]]:
        if self._socket is None:
            return bytes(await self.stream.receive_some(self.receive_size)), []
        try:  # pragma: no cover - every AF_UNIX trio socket has a raw socket
            data, ancdata, flags, _addr = await self._socket.recvmsg(
                self.receive_size,
                self._ancillary_space,
                MSG_CMSG_CLOEXEC,
            )
        except OSError as exc:  # pragma: no cover
            raise trio.BrokenResourceError(f"recvmsg failed: {exc}") from exc
        return data, parse_fds(ancdata, flags)  # pragma: no cover

    # --- handshakes ----------------------------------------------------------------------

    async def hello(self, client_name: str, *, version: int = PROTOCOL_VERSION) -> Welcome:
        """Client side of the hello exchange: send `hello`, wait for `welcome`.

        Raises:
            RemoteError: the server refused (e.g. `luod.ProtocolVersion`).
            ConnectionLost: the server closed the connection first.
            RemoteProtocolError: the server answered with something else.
        """
        await self.send(Hello(version=version, client=client_name))
        event = await self.receive()
        if event is CLOSED:
            raise ConnectionLost("the server closed the connection during the hello exchange")
        if isinstance(event, ErrorReply):
            raise RemoteError(event.error)
        assert isinstance(event, Welcome)  # the client Connection lets nothing else through
        return event

    async def accept_hello(self, server_name: str) -> Hello:
        """Server side of the hello exchange: wait for `hello`, answer `welcome`.

        A protocol error (no hello first, unsupported version, garbage) is answered with an
        `error` envelope (id null) on a best-effort basis, then raised; the caller closes.

        Raises:
            RemoteProtocolError: the client broke the protocol.
            ConnectionLost: the client closed the connection before its hello.
        """
        try:
            event = await self.receive()
        except RemoteProtocolError as exc:
            await self.send_error_and_forget(exc)
            raise
        if event is CLOSED:
            raise ConnectionLost("the client closed the connection before its hello")
        assert isinstance(event, Hello)  # the server Connection lets nothing else through
        await self.send(Welcome(version=event.version, server=server_name))
        return event

    async def send_error_and_forget(self, error: ProtocolError | ErrorReply) -> None:
        """Best effort: tell the peer why we are about to close (an `error`, id null: a
        protocol error, or the daemon's own envelope). Errors while doing so are ignored:
        the connection is going away anyway."""
        with contextlib.suppress(
            ProtocolError,
            trio.BrokenResourceError,
            trio.BusyResourceError,
            trio.ClosedResourceError,
        ):
            await self.send(error if isinstance(error, ErrorReply) else error_reply(error, None))

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the stream and every received fd no message claimed. Idempotent."""
        self.connection.close()
        close_fds(self.connection.take_unclaimed_fds())
        await self.stream.aclose()
