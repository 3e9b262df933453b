"""The hardened CBOR decoder: one item out of a frame body, refusing what cbor2 would
otherwise turn into something else.

Owns the decoder's settings (the hardening of `luod.ipc.cbor`'s docstring: no tags, no
indefinite lengths, no duplicate keys, a depth cap) and the one decoder per thread. A
module of its own, importing only cbor2 and the data model's depth, so that the short path
of luoctl's start (`luod.ipc.oneshot`) decodes exactly as the full stack does without
importing it. `luod.ipc.cbor.decode_item` adds the checks on the whole frame and the named
errors.
"""

from __future__ import annotations

import io
import threading
from typing import Final, NoReturn

import cbor2

from luod.ipc.datamodel import MAX_DEPTH

__all__ = ["BUILTIN_TAGS", "TagRefused", "decode_one"]

# Tags cbor2 6.2 decodes itself, without consulting `tag_hook` (found by probing every tag
# in 0..70000 plus a few large ones; tests/protocol re-probes so an upgrade that adds one
# fails loudly). Each is mapped to `_refuse_tag`. Some of these are dangerous beyond being
# unexpected: 28/29 (value sharing) build cycles, 25/256 (string references) and 55799
# (self-describe) are transparent, 2/3 (bignums) yield plain ints.
BUILTIN_TAGS: Final = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
    1004, 43000, 55799,
)  # fmt: skip


class TagRefused(Exception):
    """Raised inside cbor2 to abort decoding at a tag; cbor2 wraps it in CBORDecodeError."""


def _refuse_tag(*_args: object) -> NoReturn:
    raise TagRefused


def _refuse_unknown_tag(tag: cbor2.CBORTag, _immutable: bool) -> NoReturn:
    raise TagRefused(tag.tag)


_SEMANTIC_DECODERS: Final = dict.fromkeys(BUILTIN_TAGS, _refuse_tag)


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


def decode_one(frame: bytes) -> tuple[object, int]:
    """The first CBOR item of `frame`, and how many bytes it took.

    Raises:
        cbor2.CBORDecodeError: malformed, truncated (`CBORDecodeEOF`), or a tag (with
            `TagRefused` as its cause).
        RecursionError: nested beyond what the depth cap catches (belt and braces).
    """
    fp = io.BytesIO(frame)
    decoder = _decoder()
    decoder.fp = fp
    item = decoder.decode()
    # cbor2 reads ahead from a seekable file and seeks back, so tell() is exact.
    return item, fp.tell()
