"""CBOR both ways: one hardened item decoded from a frame body, and bodies encoded.

Owns every call into cbor2 but the decoder itself (`luod.ipc.cbor_strict`, which holds its
hardened settings). Decoding (`decode_item`) is hardened; encoding has a fast
path for envelopes (`encode_message`) beside the plain one (`encode_value`).

Hardening. cbor2's defaults are unsafe for input from another process: it ignores trailing
bytes, honours the value-sharing tags 28/29 (a 6-byte frame decodes to a cyclic list), turns
tags into datetimes, Decimals, big integers... Every item is therefore checked against the
protocol's data model (`luod.ipc.datamodel`), and beyond what that module says:

* no tags at all (every tag cbor2 knows is mapped to a decoder that refuses, every other
  tag reaches a `tag_hook` that refuses), no `undefined`, no other simple values;
* no indefinite-length items, no duplicate map keys, at most `MAX_DEPTH` nested containers;
* the item must consume the whole frame.

Invariant: `decode_item(f)` either returns a value of the data model or raises
`RemoteProtocolError` named `luod.BadCbor`.

Encoding. Every message we send is encoded, and the constant parts of the two hottest
envelopes (replies and requests) need not be encoded again each time: `encode_message`
joins precomputed bytes with the encoded payload, byte for byte what `cbor2.dumps` of the
wire map gives (tests/protocol/test_fastpaths.py checks it).
"""

from __future__ import annotations

import struct
from typing import Final

import cbor2

from luod.ipc.cbor_strict import BUILTIN_TAGS, TagRefused, decode_one
from luod.ipc.datamodel import MAX_DEPTH, check_data_model, conforms
from luod.ipc.envelope import wire_message
from luod.ipc.errors import ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import MAX_FDS_PER_MESSAGE, MAX_ID, Message, Reply, Request

__all__ = ["decode_item", "encode_message", "encode_uint", "encode_value"]

_BUILTIN_TAGS: Final = BUILTIN_TAGS  # the tests re-probe cbor2 against it


def _bad_cbor(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ProtocolErrorName.BAD_CBOR, message)


def decode_item(frame: bytes) -> object:
    """Decode one frame body into a value of the protocol's data model.

    Raises:
        RemoteProtocolError: `luod.BadCbor` if the frame is not exactly one well-formed item
            of the data model (see the module docstring).
    """
    try:
        item, consumed = decode_one(frame)
    except cbor2.CBORDecodeEOF:
        raise _bad_cbor(f"truncated CBOR item in a {len(frame)}-byte frame") from None
    except cbor2.CBORDecodeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, TagRefused) or "semantic tag" in str(exc):
            raise _bad_cbor(f"CBOR tags are not allowed ({exc})") from None
        raise _bad_cbor(f"malformed CBOR: {exc}") from None
    except RecursionError:  # belt and braces: max_depth should stop this first
        raise _bad_cbor("CBOR item nested too deeply") from None
    if consumed != len(frame):
        raise _bad_cbor(f"{len(frame) - consumed} trailing bytes after the CBOR item")
    problem = check_data_model(item)
    if problem is not None:
        raise _bad_cbor(problem)
    return item


# --- encoding ------------------------------------------------------------------------------


def encode_value(value: object) -> bytes:
    """The CBOR encoding of a data-model value, unchecked: check it with `conforms` (or
    `check_data_model`) first."""
    return cbor2.dumps(value)


_SMALL_UINTS: Final = tuple(bytes([n]) for n in range(24))
_UINT8: Final = struct.Struct(">BB")
_UINT16: Final = struct.Struct(">BH")
_UINT32: Final = struct.Struct(">BI")
_UINT64: Final = struct.Struct(">BQ")


def encode_uint(n: int) -> bytes:
    """The CBOR encoding of an unsigned integer 0 <= n < 2**64, in its shortest form (the
    bytes `cbor2.dumps(n)` gives)."""
    if n < 24:
        return _SMALL_UINTS[n]
    if n < 0x100:
        return _UINT8.pack(0x18, n)
    if n < 0x10000:
        return _UINT16.pack(0x19, n)
    if n < 0x100000000:
        return _UINT32.pack(0x1A, n)
    return _UINT64.pack(0x1B, n)


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
