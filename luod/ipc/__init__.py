"""luod's wire protocol: sans-IO framing, messages and errors, plus clients.

Owns everything two processes need to talk to luod over its Unix stream socket, and
nothing about what the daemon does with a request. docs/protocol.md is the reference for
people writing their own clients; the module docstrings here say how the code keeps it.

Modules, bottom up:

* `errors`          named errors (`ProtocolError` local/remote, `RemoteError`, transport)
* `datamodel`       the values that may cross the wire, and the check for them
* `messages`        the six envelopes (attrs classes)
* `convert`         the one strict cattrs converter; `MethodRegistry` for request parameters
* `envelope`        envelopes to and from wire maps, with fast paths checked by `convert`
* `cbor`            hardened CBOR decoding; encoding, with the envelope fast path
* `framing`         the u32 length prefix: frames out of a byte stream, and into one
* `state`           who may send what when: the two sides' states and the rules
* `fd_attribution`  which received fds belong to which message
* `connection`      the sans-IO connection (h11-style `receive_data`/`next_event`/`send`)
* `fdpass`          SCM_RIGHTS and SO_PEERCRED with the stdlib
* `sockets`         the default socket path rule
* `client`          the blocking client (`luoctl`)
* `async_transport` a `Connection` over a trio stream, with fds (daemon and async client)
* `async_client`    the trio client: concurrent calls and events (participants)
* `method_table`, `methods`, `plans`  the method table: every method's params, fds,
  waiting and access; the objects and plans `object.create` and `apply` take

* `limits`, `cbor_strict`, `oneshot`  the short path of luoctl's start: constants, the
  hardened decoder and one read-only call, importing no attrs

Layering: nothing here imports the daemon, the kernel model or the machine; only
`async_transport` and `async_client` import trio. This package root imports nothing at
all: the names below are loaded on first use (PEP 562), so that importing any one module
of the package (`luod.ipc.oneshot` on luoctl's short path) does not load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from luod.ipc.cbor import decode_item
    from luod.ipc.client import Client
    from luod.ipc.connection import CLOSED, NEED_DATA, Connection, Sentinel, error_reply
    from luod.ipc.convert import MethodRegistry
    from luod.ipc.errors import (
        ConnectionLost,
        DaemonTimeout,
        DaemonUnreachable,
        ErrorInfo,
        LocalProtocolError,
        PermissionDenied,
        ProtocolError,
        ProtocolErrorName,
        RemoteError,
        RemoteProtocolError,
    )
    from luod.ipc.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
    from luod.ipc.messages import (
        PROTOCOL_VERSION,
        ErrorReply,
        Event,
        Hello,
        Message,
        Reply,
        Request,
        Welcome,
    )
    from luod.ipc.state import Role, State

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_FRAME",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Client",
    "Connection",
    "ConnectionLost",
    "DaemonTimeout",
    "DaemonUnreachable",
    "ErrorInfo",
    "ErrorReply",
    "Event",
    "FrameDecoder",
    "Hello",
    "LocalProtocolError",
    "Message",
    "MethodRegistry",
    "PermissionDenied",
    "ProtocolError",
    "ProtocolErrorName",
    "RemoteError",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "Role",
    "Sentinel",
    "State",
    "Welcome",
    "decode_item",
    "encode_frame",
    "error_reply",
]

_HOME: Final = {
    "decode_item": "cbor",
    "Client": "client",
    "CLOSED": "connection",
    "NEED_DATA": "connection",
    "Connection": "connection",
    "Sentinel": "connection",
    "error_reply": "connection",
    "MethodRegistry": "convert",
    "ConnectionLost": "errors",
    "DaemonTimeout": "errors",
    "DaemonUnreachable": "errors",
    "ErrorInfo": "errors",
    "LocalProtocolError": "errors",
    "PermissionDenied": "errors",
    "ProtocolError": "errors",
    "ProtocolErrorName": "errors",
    "RemoteError": "errors",
    "RemoteProtocolError": "errors",
    "DEFAULT_MAX_FRAME": "framing",
    "FrameDecoder": "framing",
    "encode_frame": "framing",
    "PROTOCOL_VERSION": "messages",
    "ErrorReply": "messages",
    "Event": "messages",
    "Hello": "messages",
    "Message": "messages",
    "Reply": "messages",
    "Request": "messages",
    "Welcome": "messages",
    "Role": "state",
    "State": "state",
}
"""The module each re-exported name lives in."""


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"luod.ipc.{home}"), name)
    globals()[name] = value
    return value
