"""Envelopes both ways: the six message classes to and from their wire maps, fast.

Owns `structure_message` (a decoded frame into a `Message`), `unstructure_message` and
`wire_message` (a `Message` into its wire map). Every message both ways goes through here,
and cattrs costs several microseconds per envelope, so each direction has a hand-written
fast path for the fixed envelope shapes. The strict converter (`luod.ipc.convert`) stays
the reference: a fast path only ever accepts what the converter accepts and produces what
it produces (tests/protocol/test_fastpaths.py checks both against it); anything else,
errors included, goes to the converter. So a client exchanging well-formed envelopes
(`luoctl status`) never imports cattrs, and the daemon spends its time on requests rather
than on cattrs' dispatch. Request parameters always go through the converter
(`MethodRegistry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from luod.ipc.convert import MAX_EXACT_FLOAT_INT, converter, describe_structure_error
from luod.ipc.datamodel import conforms, wire_name
from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import (
    MAX_FDS_PER_MESSAGE,
    MAX_ID,
    MESSAGE_TYPES,
    ErrorReply,
    Event,
    Hello,
    Message,
    Reply,
    Request,
    Welcome,
)

__all__ = ["structure_message", "unstructure_message", "wire_message"]


def _bad_message(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ProtocolErrorName.BAD_MESSAGE, message)


def structure_message(item: object) -> Message:
    """Turn a decoded frame (a data-model value) into an envelope.

    A well-formed envelope takes a hand-written fast path (`_FAST_STRUCTURE`); anything
    else goes through the converter, which is the reference: the fast path accepts a
    subset of what the converter accepts and builds the same message, so results and
    error messages are those of the converter.

    Raises:
        RemoteProtocolError: `luod.BadMessage` naming the kind and every bad field.
    """
    if type(item) is not dict:
        raise _bad_message(f"a message must be a map, got {wire_name(item)}")
    assert isinstance(item, dict)
    kind = item.get("kind")
    if kind is None:
        raise _bad_message("a message needs a 'kind'")
    if type(kind) is not str:
        raise _bad_message(f"'kind' must be a str, got {wire_name(kind)}")
    fast = _FAST_STRUCTURE.get(kind)
    if fast is None:
        raise _bad_message(f"unknown message kind {kind!r}")
    message = fast(item)
    if message is None:
        message = _structure_message_slow(item, kind)
    return message


def _structure_message_slow(item: dict[str, object], kind: str) -> Message:
    """`structure_message` through the converter (after the checks on `kind`)."""
    cls = MESSAGE_TYPES[kind]
    body = {k: v for k, v in item.items() if k != "kind"}
    from cattrs.errors import BaseValidationError

    try:
        message: Message = converter().structure(body, cls)
    except BaseValidationError as exc:
        raise _bad_message(f"invalid {kind}: {describe_structure_error(exc)}") from None
    except (ValueError, TypeError) as exc:  # attrs validators (ranges, nfds vs fds)
        raise _bad_message(f"invalid {kind}: {exc}") from None
    return message


def unstructure_message(message: Message) -> dict[str, object]:
    """The wire map of an envelope (`kind` first; `fds` omitted, `nfds` included).

    Values already in the data model are shared with `message`, not copied: treat the map
    as read-only.
    """
    wire = wire_message(message)
    if wire is not None:
        return wire
    body: dict[str, object] = converter().unstructure(message)
    return {"kind": message.KIND, **body}


# --- envelope fast paths -------------------------------------------------------------------
#
# Every message both ways goes through the two functions above, and cattrs costs several
# microseconds per envelope. The six envelope shapes are fixed, so they are checked by hand
# here. Each `_fast_*` function returns the message only when every field is exactly right
# (same key set, exact types, same ranges as the attrs validators), else None, and the
# caller falls back to the converter, which builds the error message. The fast path never
# decides that something is wrong, so it cannot change an error.

_HELLO_KEYS: Final = frozenset({"kind", "version", "client"})
_WELCOME_KEYS: Final = frozenset({"kind", "version", "server"})
_REQUEST_KEYS: Final = frozenset({"kind", "id", "method", "params"})
_REQUEST_KEYS_NFDS: Final = _REQUEST_KEYS | {"nfds"}
_REPLY_KEYS: Final = frozenset({"kind", "id", "result"})
_REPLY_KEYS_NFDS: Final = _REPLY_KEYS | {"nfds"}
_ERROR_KEYS: Final = frozenset({"kind", "id", "error"})
_ERROR_INFO_KEYS: Final = frozenset({"name", "errno", "message", "object"})
_EVENT_KEYS: Final = frozenset({"kind", "event", "ts", "data"})


def _str_keys(value: dict[Any, Any]) -> bool:
    return all(type(key) is str for key in value)


def _fast_hello(item: dict[str, Any]) -> Message | None:
    if item.keys() != _HELLO_KEYS:
        return None
    version, client = item["version"], item["client"]
    if type(version) is not int or version < 0 or type(client) is not str:
        return None
    return Hello(version=version, client=client)


def _fast_welcome(item: dict[str, Any]) -> Message | None:
    if item.keys() != _WELCOME_KEYS:
        return None
    version, server = item["version"], item["server"]
    if type(version) is not int or version < 0 or type(server) is not str:
        return None
    return Welcome(version=version, server=server)


def _fast_request(item: dict[str, Any]) -> Message | None:
    keys = item.keys()
    if keys == _REQUEST_KEYS:
        nfds = 0
    elif keys == _REQUEST_KEYS_NFDS:
        nfds = item["nfds"]
        if type(nfds) is not int or not 0 <= nfds <= MAX_FDS_PER_MESSAGE:
            return None
    else:
        return None
    id, method, params = item["id"], item["method"], item["params"]
    if (
        type(id) is not int
        or not 0 <= id <= MAX_ID
        or type(method) is not str
        or type(params) is not dict
        or (params and not _str_keys(params))
    ):
        return None
    return Request(id=id, method=method, params=params, nfds=nfds)


def _fast_reply(item: dict[str, Any]) -> Message | None:
    keys = item.keys()
    if keys == _REPLY_KEYS:
        nfds = 0
    elif keys == _REPLY_KEYS_NFDS:
        nfds = item["nfds"]
        if type(nfds) is not int or not 0 <= nfds <= MAX_FDS_PER_MESSAGE:
            return None
    else:
        return None
    id = item["id"]
    if type(id) is not int or not 0 <= id <= MAX_ID:
        return None
    return Reply(id=id, result=item["result"], nfds=nfds)


def _fast_error(item: dict[str, Any]) -> Message | None:
    if item.keys() != _ERROR_KEYS:
        return None
    id, error = item["id"], item["error"]
    if id is not None and (type(id) is not int or not 0 <= id <= MAX_ID):
        return None
    if type(error) is not dict or error.keys() != _ERROR_INFO_KEYS:
        return None
    name, errno, message, obj = error["name"], error["errno"], error["message"], error["object"]
    if (
        type(name) is not str
        or (errno is not None and type(errno) is not str)
        or type(message) is not str
        or (obj is not None and type(obj) is not str)
    ):
        return None
    return ErrorReply(id=id, error=ErrorInfo(name=name, errno=errno, message=message, object=obj))


def _fast_event(item: dict[str, Any]) -> Message | None:
    if item.keys() != _EVENT_KEYS:
        return None
    event, ts, data = item["event"], item["ts"], item["data"]
    if type(ts) is not float:
        if type(ts) is not int or not -MAX_EXACT_FLOAT_INT <= ts <= MAX_EXACT_FLOAT_INT:
            return None
        ts = float(ts)
    if type(event) is not str or type(data) is not dict or (data and not _str_keys(data)):
        return None
    return Event(event=event, ts=ts, data=data)


_FAST_STRUCTURE: Final[dict[str, Callable[[dict[str, Any]], Message | None]]] = {
    Hello.KIND: _fast_hello,
    Welcome.KIND: _fast_welcome,
    Request.KIND: _fast_request,
    Reply.KIND: _fast_reply,
    ErrorReply.KIND: _fast_error,
    Event.KIND: _fast_event,
}
assert _FAST_STRUCTURE.keys() == MESSAGE_TYPES.keys()


def wire_message(message: Message) -> dict[str, object] | None:
    """The wire map of `message` if it is already in the data model, else None.

    The fast path of sending: the map is built by hand, in the converter's key order, and
    returned only if it passes the data-model check (`datamodel.conforms`). A value that
    conforms is one the converter would leave unchanged, so this is exactly what
    `unstructure_message` would return, and it needs no second check before encoding.
    None (an enum or attrs instance in a result, say) means: use `unstructure_message`.
    """
    wire: dict[str, object]
    cls = type(message)
    if cls is Reply:
        assert isinstance(message, Reply)
        wire = {"kind": "reply", "id": message.id, "result": message.result, "nfds": message.nfds}
    elif cls is Request:
        assert isinstance(message, Request)
        wire = {
            "kind": "request",
            "id": message.id,
            "method": message.method,
            "params": message.params,
            "nfds": message.nfds,
        }
    elif cls is ErrorReply:
        assert isinstance(message, ErrorReply)
        error = message.error
        wire = {
            "kind": "error",
            "id": message.id,
            "error": {
                "name": error.name,
                "errno": error.errno,
                "message": error.message,
                "object": error.object,
            },
        }
    elif cls is Event:
        assert isinstance(message, Event)
        wire = {"kind": "event", "event": message.event, "ts": message.ts, "data": message.data}
    elif cls is Hello:
        assert isinstance(message, Hello)
        wire = {"kind": "hello", "version": message.version, "client": message.client}
    elif cls is Welcome:
        assert isinstance(message, Welcome)
        wire = {"kind": "welcome", "version": message.version, "server": message.server}
    else:
        return None
    return wire if conforms(wire) else None
