"""The protocol's data model: the values that may cross the wire, and the check for them.

Owns the one definition of what a decoded frame may hold (and so what we may send): the
plain JSON-like subset of CBOR. `luod.ipc.cbor` refuses on decoding anything outside it,
`luod.ipc.framing.encode_frame` refuses to send it, and the envelope fast paths use
`conforms` to know that a value needs no conversion.

* null, booleans, integers in [-2**64, 2**64 - 1] (CBOR major types 0 and 1), floats,
  text strings, byte strings, arrays, maps whose keys are text strings;
* at most `MAX_DEPTH` nested containers;
* types are exact (`type(x) is int`): a subclass such as an IntEnum member is not part of
  the data model and must be unstructured first.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_DEPTH", "WIRE_NAMES", "check_data_model", "conforms", "wire_name"]

MAX_DEPTH: Final = 32
"""Containers (arrays, maps) nested deeper than this are refused."""

# CBOR integers are major types 0 and 1: an unsigned or negated unsigned 64-bit argument.
# Anything outside needs tag 2/3 (bignum), which the data model forbids.
_INT_MIN: Final = -(1 << 64)
_INT_MAX: Final = (1 << 64) - 1

WIRE_NAMES: Final[dict[type, str]] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bytes",
    list: "array",
    dict: "map",
}
"""The name of each data-model type in error messages."""


def wire_name(value: object) -> str:
    """What `value` is called in an error message: its wire type, else its Python type."""
    return WIRE_NAMES.get(type(value), type(value).__name__)


_LEAF_TYPES: Final = frozenset({type(None), bool, str, bytes, float})
_STR_ONLY: Final = frozenset({str})


def _conforms(value: object, depth: int, max_depth: int) -> bool:
    """The fast check behind `check_data_model`: no paths, no messages, just yes or no.

    Leaves inside containers are checked inline: a call per value would cost more than
    the check itself.
    """
    kind = type(value)
    if kind in _LEAF_TYPES:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if depth >= max_depth:
        return False
    depth += 1
    if kind is dict:
        # The keys' types in one C-level pass (issuperset stops at the first other type).
        if not _STR_ONLY.issuperset(map(type, value)):  # type: ignore[call-overload]
            return False
        values = value.values()  # type: ignore[attr-defined]
    elif kind is list:
        values = value
    else:
        return False
    for v in values:
        vkind = type(v)
        if vkind in _LEAF_TYPES:
            continue
        if vkind is int:
            if not _INT_MIN <= v <= _INT_MAX:
                return False
        elif not _conforms(v, depth, max_depth):
            return False
    return True


def conforms(item: object, *, max_depth: int = MAX_DEPTH) -> bool:
    """True if `item` belongs to the protocol's data model (`check_data_model` is None)."""
    return _conforms(item, 0, max_depth)


def check_data_model(item: object, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Check that `item` belongs to the protocol's data model.

    Returns None if it does, else a sentence saying what is wrong and where (`$.a[2]`).

    This runs on every message both ways, so the common case (it conforms) takes a fast
    walk that builds no path strings; only a failure is walked again to say where.
    """
    if _conforms(item, 0, max_depth):
        return None
    return _explain(item, max_depth)


def _explain(item: object, max_depth: int) -> str | None:
    # Iterative walk with an explicit stack: (value, path, depth of the enclosing container).
    stack: list[tuple[object, str, int]] = [(item, "$", 0)]
    while stack:
        value, path, depth = stack.pop()
        kind = type(value)
        if value is None or kind is bool or kind is str or kind is bytes:
            continue
        if kind is int:
            assert isinstance(value, int)
            if not _INT_MIN <= value <= _INT_MAX:
                return f"integer out of the CBOR range at {path}"
            continue
        if kind is float:
            continue
        if kind is list:
            assert isinstance(value, list)
            if depth >= max_depth:
                return f"containers nested deeper than {max_depth} at {path}"
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
            continue
        if kind is dict:
            assert isinstance(value, dict)
            if depth >= max_depth:
                return f"containers nested deeper than {max_depth} at {path}"
            for key, v in value.items():
                if type(key) is not str:
                    return f"map key {key!r} is not a text string at {path}"
                stack.append((v, f"{path}.{key}", depth + 1))
            continue
        return f"{kind.__name__} is not part of the protocol's data model at {path}"
    return None
