"""Who may send what, and when: the two sides' states and the transition rules.

Owns the protocol's state machine, kept apart from the bytes as h11 keeps `_state.py`
apart from its `Connection`: `ConnectionState.received(message)` and `.sent(message)`
check one message against the rules below and advance the states, or raise. The
`Connection` (`luod.ipc.connection`) calls them and makes errors sticky.

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
   puts our side in ERROR, except one made moot by the peer's own protocol error (`Moot`:
   refused, our side unchanged, so the server's error with a null id still goes out).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from luod.ipc.errors import LocalProtocolError, ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import ErrorReply, Event, Hello, Message, Reply, Request, Welcome

__all__ = ["ConnectionState", "Moot", "Role", "State"]


class Moot(LocalProtocolError):
    """A reply or event queued before the peer broke the protocol: refused, and our side
    stays as it was, so the connection-level error that says why can still be sent."""


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


class ConnectionState:
    """Both sides' states, the ids in flight and what the handshake settled, seen from
    `role`'s end. The `Connection` sets CLOSED and ERROR itself; the rules set the rest."""

    def __init__(self, role: Role, supported_versions: Iterable[int]) -> None:
        self.role = role
        self.supported_versions = frozenset(supported_versions)
        self.ours = State.START
        self.theirs = State.START
        self.in_flight: set[int] = set()
        self.version: int | None = None  # hello's version: sent (client) or accepted
        self.peer_name: str | None = None

    def received(self, message: Message) -> None:
        """Apply the rules to a message from the peer.

        Raises:
            RemoteProtocolError: the peer may not send `message` now.
        """
        kind = message.KIND
        if self.role is Role.SERVER:
            if self.theirs is State.START:
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
                self.version = message.version
                self.peer_name = message.client
                self.theirs = State.OPEN
                return
            if isinstance(message, Request):
                if message.id in self.in_flight:
                    raise RemoteProtocolError(
                        ProtocolErrorName.BAD_MESSAGE,
                        f"request id {message.id} is already in flight",
                    )
                self.in_flight.add(message.id)
                return
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE, f"a client may not send {kind} here"
            )

        # Client role: the peer is the server.
        if self.ours is State.START:
            raise RemoteProtocolError(
                ProtocolErrorName.BAD_MESSAGE, f"the server sent {kind} before our hello"
            )
        if isinstance(message, ErrorReply) and message.id is None:
            return  # connection-level error, allowed at any time; the server will close
        if self.theirs is State.START:
            if not isinstance(message, Welcome):
                raise RemoteProtocolError(
                    ProtocolErrorName.BAD_MESSAGE, f"expected welcome, got {kind}"
                )
            if message.version != self.version:
                raise RemoteProtocolError(
                    ProtocolErrorName.PROTOCOL_VERSION,
                    f"the server answered with protocol version {message.version}, "
                    f"we asked for {self.version}",
                )
            self.peer_name = message.server
            self.theirs = State.OPEN
            return
        if isinstance(message, Event):
            return
        if isinstance(message, Reply | ErrorReply):
            assert message.id is not None
            if message.id not in self.in_flight:
                raise RemoteProtocolError(
                    ProtocolErrorName.BAD_MESSAGE,
                    f"{kind} for request id {message.id}, which is not in flight",
                )
            self.in_flight.discard(message.id)
            return
        raise RemoteProtocolError(
            ProtocolErrorName.BAD_MESSAGE, f"a server may not send {kind} here"
        )

    def sent(self, message: Message) -> None:
        """Apply the rules to a message we are sending.

        Raises:
            LocalProtocolError: we may not send `message` now.
        """
        kind = message.KIND

        def forbidden(why: str, name: ProtocolErrorName = ProtocolErrorName.BAD_MESSAGE) -> None:
            raise LocalProtocolError(name, f"cannot send {kind}: {why}")

        if self.role is Role.CLIENT:
            if isinstance(message, Hello):
                if self.ours is not State.START:
                    forbidden("hello was already sent")
                self.version = message.version
                self.ours = State.OPEN
            elif isinstance(message, Request):
                if self.ours is not State.OPEN or self.theirs is not State.OPEN:
                    forbidden(
                        "requests may follow only a completed hello/welcome exchange",
                        ProtocolErrorName.HELLO_REQUIRED,
                    )
                if message.id in self.in_flight:
                    forbidden(f"request id {message.id} is already in flight")
                self.in_flight.add(message.id)
            else:
                forbidden("a client sends only hello and requests")
            return

        # Server role.
        if isinstance(message, ErrorReply) and message.id is None:
            return  # connection-level error: allowed in any state, even before welcome
        if self.theirs is State.ERROR and not isinstance(message, ErrorReply):
            raise Moot(
                ProtocolErrorName.BAD_MESSAGE,
                f"cannot send {kind}: the client broke the protocol; only error replies may follow",
            )
        if isinstance(message, Welcome):
            if self.ours is not State.START:
                forbidden("welcome was already sent")
            if self.theirs is not State.OPEN:
                forbidden("no acceptable hello was received", ProtocolErrorName.HELLO_REQUIRED)
            if message.version != self.version:
                forbidden(f"the client asked for version {self.version}")
            self.ours = State.OPEN
            return
        if self.ours is not State.OPEN:
            forbidden("welcome must be sent first", ProtocolErrorName.HELLO_REQUIRED)
        if isinstance(message, Reply | ErrorReply):
            assert message.id is not None
            if message.id not in self.in_flight:
                forbidden(f"no request with id {message.id} is in flight")
            self.in_flight.discard(message.id)
        elif not isinstance(message, Event):
            forbidden("a server sends only welcome, replies, errors and events")
