"""The one strict converter between wire values and attrs classes, and the method registry.

Owns the rules of every structuring and unstructuring in the protocol: of envelopes (whose
fast paths, in `luod.ipc.envelope`, must agree with it) and of request parameters
(`MethodRegistry`). There is exactly one cattrs `Converter` (`converter()`), so one set of
rules applies everywhere:

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
Envelopes take hand-written fast paths first (`luod.ipc.envelope`), checked against this
converter; parameters always come here.
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

from luod.ipc.datamodel import WIRE_NAMES, wire_name
from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import ErrorReply, Event, Hello, Reply, Request, Welcome

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "MAX_EXACT_FLOAT_INT",
    "MethodRegistry",
    "converter",
    "describe_structure_error",
    "unstructure",
]

_T = TypeVar("_T")

MAX_EXACT_FLOAT_INT: Final = 1 << 53
"""The largest magnitude of an int a float field accepts (the one widening, above)."""


class _StrictTypeError(TypeError):
    """A value of the wrong wire type; `str()` is the complete description."""


def _mismatch(expected: str, value: object) -> _StrictTypeError:
    return _StrictTypeError(f"expected {expected}, got {wire_name(value)}")


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
        if -MAX_EXACT_FLOAT_INT <= value <= MAX_EXACT_FLOAT_INT:
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
    names = " | ".join(WIRE_NAMES[m] for m in members)
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
