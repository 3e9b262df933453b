"""Framing and hardened CBOR: round trips, caps checked before buffering, and every class
of malformed input refused with a named `RemoteProtocolError`."""

from __future__ import annotations

import contextlib
import io
import struct

import cbor2
import pytest

from luod.ipc.cbor import _BUILTIN_TAGS, decode_item
from luod.ipc.datamodel import MAX_DEPTH, check_data_model
from luod.ipc.errors import LocalProtocolError, ProtocolErrorName, RemoteProtocolError
from luod.ipc.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame

from .helpers import frame

SAMPLE = {
    "kind": "request",
    "id": 7,
    "method": "x",
    "params": {"a": [1, -2, 3.5, None, True, "s", b"\x00\xff"], "m": {"k": {}}},
}


def feed_all(decoder: FrameDecoder, data: bytes, step: int) -> list[bytes]:
    frames = []
    for i in range(0, len(data), step):
        decoder.receive_data(data[i : i + step])
        while (body := decoder.next_frame()) is not None:
            frames.append(body)
    return frames


class TestRoundTrip:
    def test_encode_decode(self) -> None:
        """A frame is a 4-byte big-endian length and the CBOR body; it decodes back."""
        data = encode_frame(SAMPLE)
        (length,) = struct.unpack(">I", data[:4])
        assert length == len(data) - 4
        assert decode_item(data[4:]) == SAMPLE

    @pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 10_000])
    def test_split_anywhere(self, step: int) -> None:
        """Frames come out whole and in order however the stream is chopped."""
        items = [SAMPLE, {"n": 1}, {"s": "x" * 1000}, {}]
        data = b"".join(encode_frame(i) for i in items)
        decoder = FrameDecoder()
        bodies = feed_all(decoder, data, step)
        assert [decode_item(b) for b in bodies] == items
        assert decoder.consumed == len(data) and decoder.buffered == 0

    def test_clean_eof(self) -> None:
        """EOF between frames: next_frame returns None and `eof` is set."""
        decoder = FrameDecoder()
        decoder.receive_data(encode_frame({}))
        decoder.receive_data(b"")
        assert decoder.next_frame() is not None
        assert decoder.next_frame() is None
        assert decoder.eof

    def test_limits_of_the_data_model_round_trip(self) -> None:
        """The extreme integers and the deepest allowed nesting are accepted both ways."""
        deep: object = 0
        for _ in range(MAX_DEPTH):
            deep = [deep]
        for item in (-(1 << 64), (1 << 64) - 1, deep, float("inf"), "é", b""):
            assert decode_item(encode_frame(item)[4:]) == item


class TestCaps:
    def test_declared_length_checked_before_body(self) -> None:
        """An oversized declared length fails as soon as the 4 header bytes arrive."""
        decoder = FrameDecoder(max_frame=100)
        decoder.receive_data(struct.pack(">I", 101))
        with pytest.raises(RemoteProtocolError) as info:
            decoder.next_frame()
        assert info.value.name is ProtocolErrorName.FRAME_TOO_LARGE
        assert decoder.buffered == 4  # nothing of the body was waited for

    def test_exact_cap_accepted(self) -> None:
        decoder = FrameDecoder(max_frame=100)
        decoder.receive_data(frame(b"\x00" * 100))
        assert decoder.next_frame() == b"\x00" * 100

    def test_default_cap_is_one_mib(self) -> None:
        decoder = FrameDecoder()
        decoder.receive_data(struct.pack(">I", DEFAULT_MAX_FRAME + 1))
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            decoder.next_frame()

    def test_errors_are_sticky(self) -> None:
        """After an error, next_frame raises the same error object forever."""
        decoder = FrameDecoder(max_frame=10)
        decoder.receive_data(struct.pack(">I", 11))
        with pytest.raises(RemoteProtocolError) as first:
            decoder.next_frame()
        decoder.receive_data(frame(b"\x00"))
        with pytest.raises(RemoteProtocolError) as second:
            decoder.next_frame()
        assert first.value is second.value

    def test_total_buffer_cap(self) -> None:
        """Feeding more than max_buffer without consuming frames is refused."""
        decoder = FrameDecoder(max_frame=10, max_buffer=20)
        decoder.receive_data(b"\x00" * 20)
        decoder.receive_data(b"\x00")
        with pytest.raises(RemoteProtocolError) as info:
            decoder.next_frame()
        assert info.value.name is ProtocolErrorName.FRAME_TOO_LARGE

    def test_encode_over_cap_is_local_error(self) -> None:
        with pytest.raises(LocalProtocolError) as info:
            encode_frame({"s": "x" * 200}, max_frame=100)
        assert info.value.name is ProtocolErrorName.FRAME_TOO_LARGE

    def test_bad_limits_rejected(self) -> None:
        with pytest.raises(ValueError):
            FrameDecoder(max_frame=0)
        with pytest.raises(ValueError):
            FrameDecoder(max_frame=1 << 32)
        with pytest.raises(ValueError):
            FrameDecoder(max_frame=100, max_buffer=50)


class TestEof:
    @pytest.mark.parametrize("cut", [1, 3, 4, 5, 7])
    def test_truncated_frame_at_eof(self, cut: int) -> None:
        """EOF inside a header or a body is `luod.ConnectionClosed`."""
        data = encode_frame({"a": 1})
        decoder = FrameDecoder()
        decoder.receive_data(data[:cut])
        assert decoder.next_frame() is None
        decoder.receive_data(b"")
        with pytest.raises(RemoteProtocolError) as info:
            decoder.next_frame()
        assert info.value.name is ProtocolErrorName.CONNECTION_CLOSED

    def test_data_after_eof_is_local_error(self) -> None:
        decoder = FrameDecoder()
        decoder.receive_data(b"")
        decoder.receive_data(b"")  # repeated EOF is harmless
        with pytest.raises(LocalProtocolError):
            decoder.receive_data(b"x")


def _bad(body: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        decode_item(body)
    assert info.value.name is ProtocolErrorName.BAD_CBOR
    return info.value


class TestHardening:
    def test_trailing_bytes(self) -> None:
        """cbor2.loads would ignore trailing bytes; decode_item refuses them."""
        assert cbor2.loads(cbor2.dumps({}) + b"\x00") == {}
        assert "trailing" in str(_bad(cbor2.dumps({}) + b"\x00"))

    def test_empty_frame(self) -> None:
        _bad(b"")

    @pytest.mark.parametrize(
        "body",
        [
            "9f01ff",  # indefinite array
            "bf616101ff",  # indefinite map
            "5f4101ff",  # indefinite byte string
            "7f6161ff",  # indefinite text string
        ],
    )
    def test_indefinite_lengths(self, body: str) -> None:
        _bad(bytes.fromhex(body))

    def test_duplicate_keys(self) -> None:
        _bad(bytes.fromhex("a2616100616101"))

    def test_value_sharing_cycle(self) -> None:
        """Tags 28/29 build a self-containing list by default; refused here."""
        cyclic = bytes.fromhex("d81c81d81d00")
        assert cbor2.loads(cyclic)[0] is not None  # what cbor2 alone would do
        _bad(cyclic)
        _bad(bytes.fromhex("d81c00"))

    @pytest.mark.parametrize(
        "tag", [0, 1, 2, 3, 4, 5, 25, 30, 35, 37, 256, 258, 1004, 55799, 999, 1 << 40]
    )
    def test_every_tag_refused(self, tag: int) -> None:
        """Known (datetime, bignum, self-describe...) and unknown tags are all refused."""
        _bad(cbor2.dumps(cbor2.CBORTag(tag, 0)))

    def test_builtin_tag_list_covers_cbor2(self) -> None:
        """Every tag cbor2 decodes without asking `tag_hook` is in the deny list.

        If a cbor2 upgrade adds a built-in tag decoder, this fails instead of silently
        letting a new transparent tag (like 55799) through.
        """
        builtin = []
        for tag in range(70_000):
            called = False

            def hook(_tag: cbor2.CBORTag, _immutable: bool) -> None:
                nonlocal called
                called = True

            with contextlib.suppress(cbor2.CBORDecodeError):
                cbor2.CBORDecoder(
                    io.BytesIO(cbor2.dumps(cbor2.CBORTag(tag, 0))), tag_hook=hook
                ).decode()
            if not called:
                builtin.append(tag)
        assert set(builtin) <= set(_BUILTIN_TAGS)

    def test_depth(self) -> None:
        ok = bytes.fromhex("81" * MAX_DEPTH + "00")
        assert decode_item(ok) is not None
        _bad(bytes.fromhex("81" * (MAX_DEPTH + 1) + "00"))
        _bad(bytes.fromhex("a16161" * (MAX_DEPTH + 1) + "00"))
        _bad(bytes.fromhex("81" * 100_000 + "00"))

    @pytest.mark.parametrize(
        "body",
        [
            "a10102",  # int key
            "a1810102",  # array key
            "a1f402",  # bool key
            "a14161 02",  # bytes key
        ],
    )
    def test_non_string_keys(self, body: str) -> None:
        assert "not a text string" in str(_bad(bytes.fromhex(body.replace(" ", ""))))

    @pytest.mark.parametrize("body", ["f7", "f0", "f820", "81f7"])
    def test_undefined_and_simple_values(self, body: str) -> None:
        _bad(bytes.fromhex(body))

    @pytest.mark.parametrize(
        "body",
        [
            "62ff41",  # invalid UTF-8
            "1c",  # reserved additional info
            "ff",  # lone break
            "5b00000001000000",  # byte string claiming 2**32 bytes
            "9b0000000100000000",  # array claiming 2**32 items
        ],
    )
    def test_malformed(self, body: str) -> None:
        _bad(bytes.fromhex(body))

    def test_encode_refuses_what_decode_refuses(self) -> None:
        """We never send what we would not accept: tags, big ints, odd keys, depth."""
        deep: object = 0
        for _ in range(MAX_DEPTH + 1):
            deep = [deep]
        for item in ({1: 2}, 1 << 64, {"d": cbor2.CBORTag(1, 0)}, (1, 2), deep, {"s": {1}}):
            with pytest.raises(LocalProtocolError) as info:
                encode_frame(item)
            assert info.value.name is ProtocolErrorName.BAD_MESSAGE

    def test_check_data_model_paths(self) -> None:
        assert check_data_model({"a": [0, {"b": object()}]}) == (
            "object is not part of the protocol's data model at $.a[1].b"
        )
        assert check_data_model({"a": [True, None, 1.5]}) is None
