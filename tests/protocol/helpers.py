"""Shared helpers for protocol tests: a back-to-back connection pair and frame builders.

`ConnectionPair` wires a client and a server `Connection` directly (the bytes one side's
`send` returns are fed to the other side), like h11's test helper of the same name, so
state-machine tests need neither sockets nor trio.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from hypothesis import HealthCheck, settings

from luod.ipc.connection import CLOSED, NEED_DATA, Connection
from luod.ipc.messages import PROTOCOL_VERSION, Hello, Message, Welcome
from luod.ipc.state import Role

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Hypothesis settings for every fuzz test here: capped examples, no per-example deadline."""


def frame(body: bytes) -> bytes:
    """A frame with an arbitrary (possibly invalid) CBOR body."""
    return struct.pack(">I", len(body)) + body


def cbor_frame(item: Any) -> bytes:
    """A frame holding `item` encoded by plain cbor2 (no data-model checks)."""
    return frame(cbor2.dumps(item))


def hello_item(version: int = PROTOCOL_VERSION, client: str = "test") -> dict[str, Any]:
    return {"kind": "hello", "version": version, "client": client}


class ConnectionPair:
    """A client and a server connection talking to each other in memory."""

    def __init__(self, **kwargs: Any) -> None:
        self.client = Connection(Role.CLIENT, **kwargs)
        self.server = Connection(Role.SERVER, **kwargs)

    def _peer(self, conn: Connection) -> Connection:
        return self.server if conn is self.client else self.client

    def send(self, sender: Connection, message: Message, fds: tuple[int, ...] = ()) -> Message:
        """Send `message` from `sender`; return what the peer's next_event() yields."""
        data = sender.send(message)
        peer = self._peer(sender)
        peer.receive_data(data, fds)
        event = peer.next_event()
        assert event is not NEED_DATA and event is not CLOSED
        return event

    def handshake(self, version: int = PROTOCOL_VERSION) -> None:
        assert self.send(self.client, Hello(version=version, client="c")) == Hello(
            version=version, client="c"
        )
        assert self.send(self.server, Welcome(version=version, server="s")) == Welcome(
            version=version, server="s"
        )
