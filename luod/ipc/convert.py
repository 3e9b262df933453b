"""The one strict converter between wire values and attrs classes, and the method registry.

Owns every structuring and unstructuring in the protocol: envelopes (`structure_message`,
`unstructure_message`) and request parameters (`MethodRegistry`). There is exactly one
cattrs `Converter` (`converter()`), so one set of rules applies everywhere:

* **No coercion.** cattrs' defaults turn `"7"` into 7, `7.9` into 7, `[1, None]` into
  `["1", "None"]` and a string into a list of characters. Here every primitive is checked
  by exact type: `str`, `bytes`, `int` and `bool` accept only values of exactly that type
  (so `True` is not an int, `1` is not a bool), lists and tuples accept only CBOR arrays,
  dicts only CBOR maps, enums and Literals only members of the exact value type.
* **One widening, decided on purpose:** a `float` field also accepts an integer (not a
  bool) of magnitude at most 2**53, converted exactly. CBOR encoders in other languages
  (and anything fed from JSON) write `5.0` as `5`; the conversion loses nothing, and a
  field typed `float` never holds anything but a float. It applies to every float field
  (`Event.ts`, and parameters such as timeouts), not only one.
* **Unknown keys are rejected** (`forbid_extra_keys`), and so are missing keys for fields
  without a default.
* Errors become one readable line built from `cattrs.transform_error`:
  `expected int, got str @ $.id; required field missing @ $.method`.

Supported parameter types (what `MethodRegistry` classes may use): the primitives above,
`None`, `Any` (no check beyond the data model), attrs classes, `list[T]`, `tuple[T, ...]`,
`set[T]`, `frozenset[T]`, `dict[str, T]`, `T | None`, unions of primitives, `Literal[...]`
and `enum.Enum` subclasses (by value).

cattrs is imported lazily, on the first conversion: `luoctl --help` must not pay for it.

Envelopes, on every message both ways, also have hand-written fast paths
(`structure_message`, `wire_message`, `encode_message`). They only ever accept what the
converter accepts and produce what it produces (tests/protocol/test_fastpaths.py checks
both against it); anything else, errors included, goes to the converter. So a client
exchanging well-formed envelopes (`luoctl status`) never imports cattrs, and the daemon
spends its time on requests rather than on cattrs' dispatch. Parameters always go through
the converter.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args, get_origin

import attrs

from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.framing import MAX_DEPTH, conforms, encode_uint, encode_value
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

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "MethodRegistry",
    "converter",
    "describe_structure_error",
    "encode_message",
    "structure_message",
    "unstructure",
    "unstructure_message",
    "wire_message",
]

_T = TypeVar("_T")

_MAX_EXACT_FLOAT_INT: Final = 1 << 53

_WIRE_NAMES: Final[dict[type, str]] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    list: "array",
    dict: "map",
}


def _wire_name(value: object) -> str:
    return _WIRE_NAMES.get(type(value), type(value).__name__)


class _StrictTypeError(TypeError):
    """A value of the wrong wire type; `str()` is the complete description."""


def _mismatch(expected: str, value: object) -> _StrictTypeError:
    return _StrictTypeError(f"expected {expected}, got {_wire_name(value)}")


# --- hooks -------------------------------------------------------------------------------


def _structure_enum(value: object, cls: type[enum.Enum]) -> enum.Enum:
    # By value, with the value's exact type: IntEnum(True) would succeed in plain Python.
    for member in cls:
        if type(member.value) is type(value) and member.value == value:
            return member
    choices = ", ".join(repr(m.value) for m in cls)
    raise _StrictTypeError(f"expected one of {choices}, got {value!r}")


def _primitive_hook(prim: type) -> Callable[[object, Any], object]:
    def hook(value: object, cls: Any) -> object:
        if cls is not prim:
            # Reached through singledispatch for subclasses of the primitive: str- and
            # int-based enums whose MRO names the primitive before Enum.
            if isinstance(cls, type) and issubclass(cls, enum.Enum):
                return _structure_enum(value, cls)
            raise TypeError(f"{cls!r} is not supported by the strict converter")
        if type(value) is not prim:
            raise _mismatch(prim.__name__, value)
        return value

    return hook


def _structure_float(value: object, cls: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        if -_MAX_EXACT_FLOAT_INT <= value <= _MAX_EXACT_FLOAT_INT:
            return float(value)
        raise _StrictTypeError("expected float, got an int too large to convert exactly")
    raise _mismatch("float", value)


def _structure_literal(value: object, cls: Any) -> object:
    for choice in get_args(cls):
        wanted = choice.value if isinstance(choice, enum.Enum) else choice
        if type(wanted) is type(value) and wanted == value:
            return choice
    choices = ", ".join(repr(c.value if isinstance(c, enum.Enum) else c) for c in get_args(cls))
    raise _StrictTypeError(f"expected one of {choices}, got {value!r}")


_PRIMITIVES: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _is_primitive_union(cls: Any) -> bool:
    origin = get_origin(cls)
    if origin is not typing.Union and origin is not types.UnionType:
        return False
    return all(arg in _PRIMITIVES for arg in get_args(cls))


def _structure_primitive_union(value: object, cls: Any) -> object:
    members = get_args(cls)
    if type(value) in members:
        return value
    if float in members and type(value) is int:
        return _structure_float(value, float)
    names = " | ".join(_WIRE_NAMES[m] for m in members)
    raise _mismatch(names, value)


_SEQUENCE_ORIGINS: Final = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Set,
        collections.abc.MutableSet,
    }
)
_MAPPING_ORIGINS: Final = frozenset({dict, collections.abc.Mapping, collections.abc.MutableMapping})


def _origin(cls: Any) -> Any:
    return get_origin(cls) or cls


def _is_sequence(cls: Any) -> bool:
    return _origin(cls) in _SEQUENCE_ORIGINS


def _is_mapping(cls: Any) -> bool:
    return _origin(cls) in _MAPPING_ORIGINS


def _is_literal(cls: Any) -> bool:
    return get_origin(cls) is Literal


def _sequence_factory(cls: Any, conv: cattrs.Converter) -> Callable[[object, Any], object]:
    from cattrs.cols import list_structure_factory

    origin = _origin(cls)
    args = get_args(cls)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"{cls!r}: fixed-length tuples are not supported; use an attrs class")
    # Structure as list[T] (cattrs attaches per-index error notes), then convert.
    list_type: Any = list[args[0]] if args else list  # type: ignore[valid-type]
    as_list = list_structure_factory(list_type, conv)
    make: Callable[[list[Any]], object]
    if origin in (tuple, collections.abc.Sequence):
        make = tuple
    elif origin in (set, collections.abc.Set, collections.abc.MutableSet):
        make = set
    elif origin is frozenset:
        make = frozenset
    else:
        make = list

    def structure_sequence(value: object, _cls: Any) -> object:
        if type(value) is not list:
            raise _mismatch("array", value)
        return make(as_list(value, list))

    return structure_sequence


def _mapping_factory(cls: Any, conv: cattrs.Converter) -> Callable[[object, Any], object]:
    from cattrs.cols import mapping_structure_factory

    args = get_args(cls)
    if args and args[0] is not str:
        raise TypeError(f"{cls!r}: map keys are always str on the wire")
    dict_type: Any = dict[str, args[1]] if args else dict  # type: ignore[valid-type]
    inner = mapping_structure_factory(dict_type, conv)

    def structure_mapping(value: object, _cls: Any) -> object:
        if type(value) is not dict:
            raise _mismatch("map", value)
        return inner(value, cls)

    return structure_mapping


def _omit_fds(cls: type[Any], conv: cattrs.Converter) -> None:
    """Register hooks for an envelope: `fds` is local-only and never on the wire."""
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    if "fds" in attrs.fields_dict(cls):
        omit = override(omit=True)
        structure = make_dict_structure_fn(cls, conv, fds=omit)
        unstructure = make_dict_unstructure_fn(cls, conv, fds=omit)
    else:
        structure = make_dict_structure_fn(cls, conv)
        unstructure = make_dict_unstructure_fn(cls, conv)
    conv.register_structure_hook(cls, structure)
    conv.register_unstructure_hook(cls, unstructure)


@functools.cache
def converter() -> cattrs.Converter:
    """The protocol's one converter (built, and cattrs imported, on first use)."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    # singledispatch hooks (consulted first by cattrs, and matching subclasses).
    for prim in (str, int, bool, bytes):
        conv.register_structure_hook(prim, _primitive_hook(prim))
    conv.register_structure_hook(float, _structure_float)
    for base in (enum.Enum, enum.IntEnum, enum.StrEnum):
        conv.register_structure_hook(base, _structure_enum)
    # Predicate hooks; registered last, they win over cattrs' own predicates.
    conv.register_structure_hook_factory(_is_sequence, _sequence_factory)
    conv.register_structure_hook_factory(_is_mapping, _mapping_factory)
    conv.register_structure_hook_func(_is_literal, _structure_literal)
    conv.register_structure_hook_func(_is_primitive_union, _structure_primitive_union)
    for cls in (Hello, Welcome, Request, Reply, ErrorReply, Event, ErrorInfo):
        _omit_fds(cls, conv)
    return conv


# --- errors ------------------------------------------------------------------------------


def _format_exception(exc: BaseException, cls: type | None) -> str:
    from cattrs.v import format_exception

    if isinstance(exc, _StrictTypeError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and str(exc):  # attrs validators say what is wrong
        return f"invalid value: {exc}"
    return format_exception(exc, cls)


def describe_structure_error(exc: BaseException, path: str = "$") -> str:
    """One line describing a structuring failure, with the path of every bad field."""
    from cattrs import transform_error

    return "; ".join(transform_error(exc, path=path, format_exception=_format_exception))


# --- envelopes ---------------------------------------------------------------------------


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
        raise _bad_message(f"a message must be a map, got {_wire_name(item)}")
    assert isinstance(item, dict)
    kind = item.get("kind")
    if kind is None:
        raise _bad_message("a message needs a 'kind'")
    if type(kind) is not str:
        raise _bad_message(f"'kind' must be a str, got {_wire_name(kind)}")
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
        if type(ts) is not int or not -_MAX_EXACT_FLOAT_INT <= ts <= _MAX_EXACT_FLOAT_INT:
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


def _text(value: str) -> bytes:
    return encode_value(value)


# Constant parts of the two hottest envelopes, in the converter's key order.
_REPLY_HEAD: Final = b"\xa4" + _text("kind") + _text("reply") + _text("id")
_REQUEST_HEAD: Final = b"\xa5" + _text("kind") + _text("request") + _text("id")
_RESULT_KEY: Final = _text("result")
_METHOD_KEY: Final = _text("method")
_PARAMS_KEY: Final = _text("params")
_NFDS_KEY: Final = _text("nfds")


def encode_message(message: Message) -> bytes | None:
    """The CBOR body of `message` if it is already in the data model, else None.

    Byte for byte what `cbor2.dumps(unstructure_message(message))` gives (the tests check
    it), minus the work: the constant parts of replies and requests are encoded once,
    and only the payload is checked (`conforms`) and encoded. None means: use
    `unstructure_message` and `encode_frame`, which say what is wrong.
    """
    cls = type(message)
    if cls is Reply:
        assert isinstance(message, Reply)
        id, nfds, result = message.id, message.nfds, message.result
        if (
            type(id) is int
            and 0 <= id <= MAX_ID
            and type(nfds) is int
            and 0 <= nfds <= MAX_FDS_PER_MESSAGE
            and conforms(result, max_depth=MAX_DEPTH - 1)
        ):
            return b"".join(
                (
                    _REPLY_HEAD,
                    encode_uint(id),
                    _RESULT_KEY,
                    encode_value(result),
                    _NFDS_KEY,
                    encode_uint(nfds),
                )
            )
        return None
    if cls is Request:
        assert isinstance(message, Request)
        id, nfds, method, params = message.id, message.nfds, message.method, message.params
        if (
            type(id) is int
            and 0 <= id <= MAX_ID
            and type(nfds) is int
            and 0 <= nfds <= MAX_FDS_PER_MESSAGE
            and type(method) is str
            and conforms(params, max_depth=MAX_DEPTH - 1)
        ):
            return b"".join(
                (
                    _REQUEST_HEAD,
                    encode_uint(id),
                    _METHOD_KEY,
                    encode_value(method),
                    _PARAMS_KEY,
                    encode_value(params),
                    _NFDS_KEY,
                    encode_uint(nfds),
                )
            )
        return None
    wire = wire_message(message)
    return None if wire is None else encode_value(wire)


def wire_message(message: Message) -> dict[str, object] | None:
    """The wire map of `message` if it is already in the data model, else None.

    The fast path of sending: the map is built by hand, in the converter's key order, and
    returned only if it passes the data-model check (`framing.conforms`). A value that
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


def unstructure(value: object) -> object:
    """Unstructure any value (attrs instances, enums, containers) with the converter."""
    return converter().unstructure(value)


# --- methods -----------------------------------------------------------------------------


class MethodRegistry:
    """Method names mapped to the attrs classes of their parameters.

    The daemon owns the methods; it registers each parameter class with
    `@registry.method("session.create")` and structures incoming requests with
    `registry.structure(request)`.

    Registering does not import cattrs, so a module of method definitions can be imported
    by `luoctl` for free. `validate()` builds every structuring hook at once, so a
    parameter class using an unsupported type fails when the daemon starts (and in tests)
    rather than on the first request; `structure` builds hooks on demand anyway.

    `structure` raises `RemoteProtocolError` (`luod.UnknownMethod`, `luod.BadParams`), but
    these concern one request, not the connection: the `Connection` is unaffected, and the
    daemon answers `error_reply(exc, request.id)` and carries on.
    """

    def __init__(self) -> None:
        self._methods: dict[str, type[Any]] = {}
        # Structuring hook of each method, looked up once (the converter's dispatch costs
        # more than structuring a small parameter class).
        self._hooks: dict[str, tuple[Callable[[Any, Any], object], type[Any]]] = {}

    def method(self, name: str) -> Callable[[type[_T]], type[_T]]:
        """Class decorator registering `cls` as the parameter class of method `name`."""

        def register(cls: type[_T]) -> type[_T]:
            self.register(name, cls)
            return cls

        return register

    def register(self, name: str, cls: type[Any]) -> None:
        """Register `cls` (an attrs class) as the parameter class of method `name`."""
        if not attrs.has(cls):
            raise TypeError(f"parameters of {name!r} must be an attrs class, got {cls!r}")
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = cls

    def validate(self) -> None:
        """Build the structuring hook of every registered class now.

        Raises:
            TypeError: a parameter class uses a type the strict converter does not support
                (the message names the method).
        """
        conv = converter()
        for name, cls in self._methods.items():
            try:
                conv.get_structure_hook(cls)
            except TypeError as exc:
                raise TypeError(f"parameters of {name!r}: {exc}") from exc

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        """Registered method names, sorted."""
        return sorted(self._methods)

    def params_class(self, name: str) -> type[Any] | None:
        """The parameter class of `name`, or None if no such method is registered."""
        return self._methods.get(name)

    def structure(self, request: Request) -> object:
        """Structure `request.params` into the method's parameter class.

        Raises:
            RemoteProtocolError: `luod.UnknownMethod` if the method is not registered,
                `luod.BadParams` naming the method and the path of every bad field.
                Either way `object` is the method name.
        """
        method = request.method
        cached = self._hooks.get(method)
        if cached is None:
            cls = self._methods.get(method)
            if cls is None:
                raise RemoteProtocolError(
                    ProtocolErrorName.UNKNOWN_METHOD, f"unknown method {method!r}", object=method
                )
            cached = self._hooks[method] = (converter().get_structure_hook(cls), cls)
        hook, cls = cached
        try:
            return hook(request.params, cls)
        except Exception as exc:
            from cattrs.errors import BaseValidationError

            if isinstance(exc, BaseValidationError):
                reason = describe_structure_error(exc, path="params")
            elif isinstance(exc, ValueError | TypeError):  # attrs validators of the class
                reason = str(exc)
            else:
                raise
        raise RemoteProtocolError(
            ProtocolErrorName.BAD_PARAMS, f"invalid params for {method}: {reason}", object=method
        )
