"""One read-only call on a fresh connection, on the happy path only: luoctl's short start.

Owns the shortest way through the protocol: connect, `hello`, one request without fds, its
`reply`. It imports the stdlib's socket and struct, cbor2 and the three import-free
modules under it (`limits`, `cbor_strict`, `datamodel`): no attrs, no cattrs, no
`Connection`, because luoctl pays every import on every run and its read-only commands
(`status`) are the ones scripts run in loops. Replies are decoded by the same hardened
decoder and checked against the same data model as on the full path.

Anything off the happy path (nothing listening, a refused or an unknown hello, an `error`
reply, an event, a malformed, oversized or foreign frame, fds, a timeout) returns None,
and the caller makes the same call again through the full client (`luod.ipc.client`),
which reports what went wrong exactly as it always has. Hence the rule: only methods that
change nothing may be called here, since the call may reach the daemon twice. A timeout
counts double that way (once here, once on the full path).
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

import cbor2

from luod.ipc.cbor_strict import decode_one
from luod.ipc.datamodel import MAX_DEPTH, conforms
from luod.ipc.limits import DEFAULT_MAX_FRAME, HEADER_SIZE, PROTOCOL_VERSION

__all__ = ["call_read_only"]

_HEADER: Final = struct.Struct(">I")
_REQUEST_ID: Final = 1
_WELCOME_KEYS: Final = frozenset({"kind", "version", "server"})
_REPLY_KEYS: Final = frozenset({"kind", "id", "result", "nfds"})


class _OffPath(Exception):
    """The exchange left the happy path: the caller takes the full client."""


def _frame(item: dict[str, object]) -> bytes:
    body = cbor2.dumps(item)
    return _HEADER.pack(len(body)) + body


def _receive_item(sock: socket.socket, buf: bytearray) -> object:
    """The next frame's item (hardened decoding, data-model checked)."""
    while True:
        if len(buf) >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buf)
            if size > DEFAULT_MAX_FRAME:
                raise _OffPath
            if len(buf) >= HEADER_SIZE + size:
                body = bytes(buf[HEADER_SIZE : HEADER_SIZE + size])
                del buf[: HEADER_SIZE + size]
                item, consumed = decode_one(body)
                if consumed != size or not conforms(item, max_depth=MAX_DEPTH):
                    raise _OffPath
                return item
        data = sock.recv(65536)  # fds sent with it (none expected) are closed by the kernel
        if not data:
            raise _OffPath
        buf += data


def call_read_only(
    path: str, method: str, *, timeout: float | None, client_name: str
) -> Any | None:
    """The result of `method` (no params, no fds) called on the daemon at `path`, or None
    when anything went differently from a plain success (see the module docstring)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        buf = bytearray()
        sock.sendall(_frame({"kind": "hello", "version": PROTOCOL_VERSION, "client": client_name}))
        welcome = _receive_item(sock, buf)
        if (
            type(welcome) is not dict
            or welcome.keys() != _WELCOME_KEYS
            or welcome["kind"] != "welcome"
            or welcome["version"] != PROTOCOL_VERSION
        ):
            return None
        request = {"kind": "request", "id": _REQUEST_ID, "method": method, "params": {}}
        sock.sendall(_frame({**request, "nfds": 0}))
        reply = _receive_item(sock, buf)
        if (
            type(reply) is not dict
            or reply.keys() != _REPLY_KEYS
            or reply["kind"] != "reply"
            or reply["id"] != _REQUEST_ID
            or reply["nfds"] != 0
        ):
            return None
        return reply["result"]
    except (OSError, ValueError, RecursionError, _OffPath):  # cbor2's errors are ValueErrors
        return None
    finally:
        sock.close()
