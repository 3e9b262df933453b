"""Framing: a u32 big-endian length prefix, then exactly one hardened CBOR item.

Owns the byte level of the protocol: splitting a byte stream into frames (`FrameDecoder`),
turning a frame into a Python value and back (`decode_item`, `encode_frame`), and the data
model every value on the wire belongs to. Nothing here knows about messages or sockets.

Why a length prefix: cbor2 has no incremental parser, so a self-delimiting CBOR stream would
have to be re-decoded from the start after every read (quadratic). With a prefix the decoder
knows the frame size from the first four bytes, refuses an oversized frame *before*
buffering its body, and decodes each frame exactly once.

Hardening. cbor2's defaults are unsafe for input from another process: it ignores trailing
bytes, honours the value-sharing tags 28/29 (a 6-byte frame decodes to a cyclic list), turns
tags into datetimes, Decimals, big integers... The protocol's data model is therefore the
plain JSON-like subset of CBOR, and every item is checked against it:

* null, booleans, integers in [-2**64, 2**64 - 1] (CBOR major types 0 and 1), floats,
  text strings, byte strings, definite-length arrays, definite-length maps whose keys are
  text strings;
* no tags at all (every tag cbor2 knows is mapped to a decoder that refuses, every other
  tag reaches a `tag_hook` that refuses), no `undefined`, no other simple values;
* no indefinite-length items, no duplicate map keys, at most `MAX_DEPTH` nested containers;
* the item must consume the whole frame.

Invariant: `decode_item(f)` either returns a value of the data model or raises
`RemoteProtocolError` named `luod.BadCbor`; `encode_frame` refuses (with a
`LocalProtocolError`) anything `decode_item` would refuse, so we never send what we would
not accept.
"""

from __future__ import annotations

import io
import struct
import threading
from typing import Final, NoReturn

import cbor2

from luod.ipc.errors import LocalProtocolError, ProtocolErrorName, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "MAX_DEPTH",
    "FrameDecoder",
    "check_data_model",
    "conforms",
    "decode_item",
    "encode_frame",
    "encode_uint",
    "encode_value",
    "frame_body",
]

DEFAULT_MAX_FRAME: Final = 1 << 20
"""Default cap on a frame's body (1 MiB); bulk data travels by fd passing, not in frames."""

HEADER_SIZE: Final = 4
_HEADER: Final = struct.Struct(">I")
_U32_MAX: Final = (1 << 32) - 1

MAX_DEPTH: Final = 32
"""Containers (arrays, maps) nested deeper than this are refused."""

# CBOR integers are major types 0 and 1: an unsigned or negated unsigned 64-bit argument.
# Anything outside needs tag 2/3 (bignum), which the data model forbids.
_INT_MIN: Final = -(1 << 64)
_INT_MAX: Final = (1 << 64) - 1

# Tags cbor2 6.2 decodes itself, without consulting `tag_hook` (found by probing every tag
# in 0..70000 plus a few large ones; tests/protocol re-probes so an upgrade that adds one
# fails loudly). Each is mapped to `_refuse_tag`. Some of these are dangerous beyond being
# unexpected: 28/29 (value sharing) build cycles, 25/256 (string references) and 55799
# (self-describe) are transparent, 2/3 (bignums) yield plain ints.
_BUILTIN_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
    1004, 43000, 55799,
)  # fmt: skip


class _TagRefused(Exception):
    """Raised inside cbor2 to abort decoding at a tag; cbor2 wraps it in CBORDecodeError."""


def _refuse_tag(*_args: object) -> NoReturn:
    raise _TagRefused


def _refuse_unknown_tag(tag: cbor2.CBORTag, _immutable: bool) -> NoReturn:
    raise _TagRefused(tag.tag)


_SEMANTIC_DECODERS: Final = dict.fromkeys(_BUILTIN_TAGS, _refuse_tag)


def _bad_cbor(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ProtocolErrorName.BAD_CBOR, message)


_NO_INPUT: Final = io.BytesIO()


def _new_decoder() -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        _NO_INPUT,
        tag_hook=_refuse_unknown_tag,
        semantic_decoders=_SEMANTIC_DECODERS,
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        str_errors="strict",
    )


_thread_state = threading.local()


def _decoder() -> cbor2.CBORDecoder:
    """This thread's hardened decoder, built once: building one costs more than decoding a
    small frame. Reusing it is safe because nothing it decodes leaves state behind: every
    tag is refused (so no shared values or string references), and the depth count starts
    afresh with each `decode()` (tests/protocol/test_fastpaths.py checks both after errors).
    One per thread, because a decoder is not reentrant. It keeps its last input (one frame)
    alive until the next decode."""
    try:
        decoder: cbor2.CBORDecoder = _thread_state.decoder
    except AttributeError:
        decoder = _thread_state.decoder = _new_decoder()
    return decoder


def decode_item(frame: bytes) -> object:
    """Decode one frame body into a value of the protocol's data model.

    Raises:
        RemoteProtocolError: `luod.BadCbor` if the frame is not exactly one well-formed item
            of the data model (see the module docstring).
    """
    fp = io.BytesIO(frame)
    decoder = _decoder()
    decoder.fp = fp
    try:
        item = decoder.decode()
    except cbor2.CBORDecodeEOF:
        raise _bad_cbor(f"truncated CBOR item in a {len(frame)}-byte frame") from None
    except cbor2.CBORDecodeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, _TagRefused) or "semantic tag" in str(exc):
            raise _bad_cbor(f"CBOR tags are not allowed ({exc})") from None
        raise _bad_cbor(f"malformed CBOR: {exc}") from None
    except RecursionError:  # belt and braces: max_depth should stop this first
        raise _bad_cbor("CBOR item nested too deeply") from None
    # cbor2 reads ahead from a seekable file and seeks back, so tell() is exact.
    consumed = fp.tell()
    if consumed != len(frame):
        raise _bad_cbor(f"{len(frame) - consumed} trailing bytes after the CBOR item")
    problem = check_data_model(item)
    if problem is not None:
        raise _bad_cbor(problem)
    return item


_LEAF_TYPES: Final = frozenset({type(None), bool, str, bytes, float})


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
        if not all(type(key) is str for key in value):  # type: ignore[attr-defined]
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
    Types are checked exactly (`type(x) is int`): a subclass such as an IntEnum member is
    not part of the data model and must be unstructured first.

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


def encode_frame(item: object, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode `item` (a value of the data model, normally a message map) as one frame.

    Raises:
        LocalProtocolError: `luod.BadMessage` if `item` is outside the data model,
            `luod.FrameTooLarge` if the encoded item exceeds `max_frame` bytes.
    """
    problem = check_data_model(item)
    if problem is not None:
        raise LocalProtocolError(ProtocolErrorName.BAD_MESSAGE, f"cannot send: {problem}")
    return frame_body(cbor2.dumps(item), max_frame=max_frame)


def encode_value(value: object) -> bytes:
    """The CBOR encoding of a data-model value, unchecked: for building a body in parts
    (see `luod.ipc.convert.encode_message`); check it with `conforms` first."""
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


def frame_body(body: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The frame carrying `body` (an encoded item of the data model): the length prefix
    and the body.

    Raises:
        LocalProtocolError: `luod.FrameTooLarge` if `body` exceeds `max_frame` bytes.
    """
    size = len(body)
    if size > max_frame:
        raise LocalProtocolError(
            ProtocolErrorName.FRAME_TOO_LARGE,
            f"cannot send a {size}-byte frame: the cap is {max_frame} bytes",
        )
    return size.to_bytes(HEADER_SIZE, "big") + body


class FrameDecoder:
    """Sans-IO splitter of a byte stream into frame bodies.

    Feed bytes with `receive_data` (b"" means end of stream), then call `next_frame` until
    it returns None. The decoder never does I/O and never decodes CBOR.

    Limits:
        max_frame: the largest frame body accepted. The declared length is checked as soon
            as the four header bytes are present, before any of the body is buffered.
        max_buffer: the most bytes held at once (default: twice a maximal frame with its
            header). Callers read more only after `next_frame` returned None and read at
            most `max_frame + 4` bytes per call; then a well-behaved peer never reaches it.

    Errors are sticky: once `next_frame` has raised, it raises the same error forever.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_buffer: int | None = None) -> None:
        if max_frame < 1:
            raise ValueError(f"max_frame must be positive, got {max_frame}")
        if max_frame > _U32_MAX:
            raise ValueError(f"max_frame must fit the u32 header, got {max_frame}")
        self.max_frame = max_frame
        self.max_buffer = 2 * (max_frame + HEADER_SIZE) if max_buffer is None else max_buffer
        if self.max_buffer < max_frame + HEADER_SIZE:
            raise ValueError("max_buffer must hold at least one maximal frame and its header")
        self._buffer = bytearray()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        # Stream offset of the first byte in `_buffer` (= bytes consumed by returned frames).
        self._consumed = 0
        self._received = 0

    @property
    def eof(self) -> bool:
        """True once the end of the stream was fed (`receive_data(b"")`)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    @property
    def consumed(self) -> int:
        """Stream offset just past the last frame returned (header included)."""
        return self._consumed

    @property
    def received(self) -> int:
        """Total bytes fed so far."""
        return self._received

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer `data`; `b""` marks the end of the stream.

        Raises:
            LocalProtocolError: `luod.ConnectionClosed` if data is fed after the end.
        """
        if self._eof:
            if data:
                raise LocalProtocolError(
                    ProtocolErrorName.CONNECTION_CLOSED, "data received after end of stream"
                )
            return
        if not data:
            self._eof = True
            return
        self._received += len(data)
        if self._error is not None:
            return  # already failed; nothing more is looked at
        if len(self._buffer) + len(data) > self.max_buffer:
            # Not appended: the peer is flooding us. Reported by next_frame, so that the
            # caller sees every error at one place.
            self._error = RemoteProtocolError(
                ProtocolErrorName.FRAME_TOO_LARGE,
                f"receive buffer would exceed its {self.max_buffer}-byte cap",
            )
            return
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None if more data is needed (or at EOF).

        Raises:
            RemoteProtocolError: `luod.FrameTooLarge` for a declared length over the cap or
                a buffer overflow, `luod.ConnectionClosed` if the stream ended mid-frame.
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        if len(buffer) >= HEADER_SIZE:
            (length,) = _HEADER.unpack_from(buffer)
            if length > self.max_frame:
                self._error = RemoteProtocolError(
                    ProtocolErrorName.FRAME_TOO_LARGE,
                    f"frame of {length} bytes exceeds the {self.max_frame}-byte cap",
                )
                raise self._error
            end = HEADER_SIZE + length
            if len(buffer) >= end:
                frame = bytes(buffer[HEADER_SIZE:end])
                # Deleting from the front of a bytearray is amortised O(1) in CPython.
                del buffer[:end]
                self._consumed += end
                return frame
        if self._eof and buffer:
            self._error = RemoteProtocolError(
                ProtocolErrorName.CONNECTION_CLOSED,
                f"connection closed in the middle of a frame ({len(buffer)} bytes pending)",
            )
            raise self._error
        return None
