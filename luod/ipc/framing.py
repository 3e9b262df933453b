"""Framing: a u32 big-endian length prefix, then exactly one CBOR item.

Owns the byte level of a stream: splitting it into frames (`FrameDecoder`) and building a
frame (`frame_body`, `encode_frame`). What a frame body holds is decoded and encoded by
`luod.ipc.cbor` and checked against `luod.ipc.datamodel`; nothing here knows about
messages or sockets.

Why a length prefix: cbor2 has no incremental parser, so a self-delimiting CBOR stream would
have to be re-decoded from the start after every read (quadratic). With a prefix the decoder
knows the frame size from the first four bytes, refuses an oversized frame *before*
buffering its body, and decodes each frame exactly once.

Invariant: `encode_frame` refuses (with a `LocalProtocolError`) anything
`luod.ipc.cbor.decode_item` would refuse, so we never send what we would not accept.
"""

from __future__ import annotations

import struct
from typing import Final

from luod.ipc.cbor import encode_value
from luod.ipc.datamodel import check_data_model
from luod.ipc.errors import LocalProtocolError, ProtocolErrorName, RemoteProtocolError
from luod.ipc.limits import DEFAULT_MAX_FRAME, HEADER_SIZE

__all__ = ["DEFAULT_MAX_FRAME", "HEADER_SIZE", "FrameDecoder", "encode_frame", "frame_body"]

_HEADER: Final = struct.Struct(">I")
_U32_MAX: Final = (1 << 32) - 1


def encode_frame(item: object, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode `item` (a value of the data model, normally a message map) as one frame.

    Raises:
        LocalProtocolError: `luod.BadMessage` if `item` is outside the data model,
            `luod.FrameTooLarge` if the encoded item exceeds `max_frame` bytes.
    """
    problem = check_data_model(item)
    if problem is not None:
        raise LocalProtocolError(ProtocolErrorName.BAD_MESSAGE, f"cannot send: {problem}")
    return frame_body(encode_value(item), max_frame=max_frame)


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
