"""luod's wire protocol: sans-IO framing, messages and errors, plus clients.

Owns everything two processes need to talk to luod over its Unix stream socket, and
nothing about what the daemon does with a request. docs/protocol.md is the reference for
people writing their own clients; the module docstrings here say how the code keeps it.

Modules, bottom up:

* `errors`      named errors (`ProtocolError` local/remote, `RemoteError`, transport errors)
* `framing`     u32 length prefix + one hardened CBOR item; the data model
* `messages`    the six envelopes (attrs classes)
* `convert`     the one strict cattrs converter; `MethodRegistry` for request parameters
* `method_table`, `methods`, `plans`  the method table: every method's params, fds,
  waiting and access; the objects and plans `object.create` and `apply` take
* `connection`  the sans-IO state machine (h11-style `receive_data`/`next_event`/`send`)
* `fdpass`      SCM_RIGHTS and SO_PEERCRED with the stdlib
* `client`      the blocking client (`luoctl`)
* `trio_stream`, `trio_client`  the trio adapter and the async client (participants)

Layering: nothing here imports the daemon, the kernel model or the machine; only
`trio_stream` and `trio_client` import trio, and this package root does not import them,
so `import luod.ipc` (and the blocking client) stays cheap for `luoctl`.
"""

from __future__ import annotations

from luod.ipc.client import Client
from luod.ipc.connection import (
    CLOSED,
    NEED_DATA,
    Connection,
    Role,
    Sentinel,
    State,
    error_info,
    error_reply,
)
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
from luod.ipc.framing import DEFAULT_MAX_FRAME, FrameDecoder, decode_item, encode_frame
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
    "error_info",
    "error_reply",
]
