"""Tests for luod.kernel_model.fdt: round trips, dtc interop, hostile-input decoding."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.kernel_model.fdt import FdtError, FdtNode, decode_fdt, encode_fdt

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAGIC = 0xD00DFEED
BEGIN, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


# --- helpers -----------------------------------------------------------------


def _words(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def _begin(name: str) -> bytes:
    raw = name.encode() + b"\0"
    return _words(BEGIN) + raw + b"\0" * (-len(raw) % 4)


def _prop(value: bytes, nameoff: int, *, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return _words(PROP, size, nameoff) + value + b"\0" * (-len(value) % 4)


def _raw_blob(
    struct_block: bytes,
    strings: bytes = b"",
    *,
    rsv: bytes = bytes(16),
    version: int = 17,
    last_comp: int = 16,
) -> bytes:
    """Hand-assemble a DTB: header | struct | strings (padded to 8) | reservations."""
    off_struct = 40
    off_strings = off_struct + len(struct_block)
    padded = strings + b"\0" * (-(off_strings + len(strings)) % 8)
    off_rsv = off_strings + len(padded)
    total = off_rsv + len(rsv)
    header = _words(
        MAGIC, total, off_struct, off_strings, off_rsv, version, last_comp, 0,
        len(strings), len(struct_block),
    )  # fmt: skip
    return header + struct_block + padded + rsv


def _patch_u32(blob: bytes, offset: int, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(">I", out, offset, value)
    return bytes(out)


def _sample_tree() -> FdtNode:
    root = FdtNode("")
    root.set_str("compatible", "kho-v1")
    root.set_u64("preserved-memory-map", 0x1000)
    memblock = root.add_child("memblock")
    memblock.set_u32("count", 3)
    memblock.set_u64_array("ranges-list", [1, 2**64 - 1, 0])
    memblock.set_bytes("blob", b"\x01\x02\x03")
    memblock.add_child("reserve_mem@1000").set_str("label", "ftrace")
    root.add_child("luo").set_bytes("empty", b"")
    return root


SAMPLE = encode_fdt(_sample_tree())
SAMPLE_PROP_AT = struct.unpack_from(">I", SAMPLE, 8)[0] + 8  # root's first FDT_PROP


def _decode_or_error(blob: bytes) -> FdtNode | None:
    """Decode, allowing only FdtError, and check that it was quick."""
    start = time.perf_counter()
    try:
        return decode_fdt(blob)
    except FdtError:
        return None
    finally:
        assert time.perf_counter() - start < 1.0, "decode_fdt took too long"


def _error(blob: bytes, **kwargs: int) -> str:
    with pytest.raises(FdtError) as info:
        decode_fdt(blob, **kwargs)
    return str(info.value)


# --- round trips ---------------------------------------------------------------


def test_round_trip_hand_built_tree() -> None:
    tree = _sample_tree()
    decoded = decode_fdt(SAMPLE)
    assert decoded == tree
    assert list(decoded.properties) == ["compatible", "preserved-memory-map"]
    assert decoded.get_str("compatible") == "kho-v1"
    assert decoded.get_u64("preserved-memory-map") == 0x1000
    memblock = decoded.child("memblock")
    assert memblock is not None
    assert memblock.get_u32("count") == 3
    assert memblock.get_u64_array("ranges-list") == [1, 2**64 - 1, 0]
    assert memblock.properties["blob"] == b"\x01\x02\x03"
    reserve = memblock.child("reserve_mem@1000")
    assert reserve is not None
    assert reserve.path == "/memblock/reserve_mem@1000"
    assert reserve.get_str("label") == "ftrace"
    assert decoded.child("missing") is None
    assert decode_fdt(bytearray(SAMPLE)) == tree
    assert decode_fdt(memoryview(SAMPLE)) == tree
    assert encode_fdt(decoded) == SAMPLE


def test_encoding_layout_and_string_dedup() -> None:
    root = FdtNode("")
    root.add_child("a").set_u32("same", 1)
    root.add_child("b").set_u32("same", 2)
    blob = encode_fdt(root, boot_cpuid_phys=5)
    fields = struct.unpack_from(">10I", blob)
    assert fields[:2] == (MAGIC, len(blob))
    assert fields[4] == 40
    assert blob[40:56] == bytes(16)
    assert fields[5:8] == (17, 16, 5)
    assert blob[fields[3] :] == b"same\0"


_NODE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+-"
_NODE_NAMES = st.builds(
    lambda base, unit: base + unit,
    st.text(_NODE_CHARS, min_size=1, max_size=31),
    st.sampled_from(["", "@0", "@1000", "@fe,1"]),
)
_PROP_NAMES = st.text(_NODE_CHARS + "?#", min_size=1, max_size=31)


def _trees(depth: int, name: st.SearchStrategy[str]) -> st.SearchStrategy[FdtNode]:
    props = st.dictionaries(_PROP_NAMES, st.binary(max_size=20), max_size=4)
    kids: st.SearchStrategy[list[FdtNode]] = st.just([])
    if depth > 0:
        child = _trees(depth - 1, _NODE_NAMES)
        kids = st.lists(child, max_size=3, unique_by=lambda n: n.name)
    return st.builds(FdtNode, name, props, kids)


@FAST
@given(_trees(3, st.just("")))
def test_random_trees_round_trip(tree: FdtNode) -> None:
    assert decode_fdt(encode_fdt(tree)) == tree


# --- dtc interop -----------------------------------------------------------------


def _dtc() -> str:
    dtc = shutil.which("dtc")
    if dtc is None:
        pytest.fail(
            "dtc not found: install Debian's device-tree-compiler (`make test` installs it)"
        )
    return dtc


def test_dtc_decodes_encoded_blob(tmp_path: Path) -> None:
    root = FdtNode("")
    root.set_str("compatible", "kho-v1")
    root.set_u64("preserved-memory-map", 0x1000)
    sub = root.add_child("memblock")
    sub.set_u64("fdt", 0x2000)
    sub.add_child("reserve-mem").set_str("label", "ftrace")
    path = tmp_path / "kho.dtb"
    path.write_bytes(encode_fdt(root))
    proc = subprocess.run(
        [_dtc(), "-I", "dtb", "-O", "dts", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    dts = proc.stdout
    assert "memblock {" in dts
    assert "reserve-mem {" in dts
    assert 'compatible = "kho-v1";' in dts
    assert re.search(r"preserved-memory-map = <0x0+ 0x1000>;", dts), dts
    assert re.search(r"fdt = <0x0+ 0x2000>;", dts), dts


def test_decodes_dtc_compiled_blob(tmp_path: Path) -> None:
    src = tmp_path / "in.dts"
    src.write_text('/dts-v1/;\n/ { compatible = "kho-v1"; n { v = <7>; }; };\n')
    out = tmp_path / "out.dtb"
    proc = subprocess.run(
        [_dtc(), "-I", "dts", "-O", "dtb", "-o", str(out), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    root = decode_fdt(out.read_bytes())
    assert root.get_str("compatible") == "kho-v1"
    node = root.child("n")
    assert node is not None
    assert node.get_u32("v") == 7


# --- hostile input: fuzz ---------------------------------------------------------


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_byte_flips(flips: list[tuple[int, int]]) -> None:
    blob = bytearray(SAMPLE)
    for index, mask in flips:
        blob[index] ^= mask
    _decode_or_error(bytes(blob))


@FAST
@given(st.integers(0, len(SAMPLE)))
def test_fuzz_truncation(length: int) -> None:
    result = _decode_or_error(SAMPLE[:length])
    assert (result is not None) == (length == len(SAMPLE))


@FAST
@given(st.binary(max_size=512), st.booleans())
def test_fuzz_random_bytes(data: bytes, with_magic: bool) -> None:
    _decode_or_error(_words(MAGIC) + data if with_magic else data)


@FAST
@given(st.integers(0, len(SAMPLE) // 4 - 1), st.integers(0, 2**32 - 1))
def test_fuzz_any_word_any_value(word: int, value: int) -> None:
    """Covers absurd totalsize, offsets, sizes, versions, tokens, lengths, nameoffs."""
    _decode_or_error(_patch_u32(SAMPLE, word * 4, value))


@FAST
@given(
    st.sampled_from([4, SAMPLE_PROP_AT + 4, SAMPLE_PROP_AT + 8]),
    st.integers(0, 2**32 - 1),
)
def test_fuzz_totalsize_length_nameoff(offset: int, value: int) -> None:
    _decode_or_error(_patch_u32(SAMPLE, offset, value))


@FAST
@given(st.integers(1, 5000), st.booleans())
def test_fuzz_deep_nesting(depth: int, closed: bool) -> None:
    body = _begin("") + _begin("a") * (depth - 1)
    if closed:
        body += _words(END_NODE) * depth + _words(END)
    result = _decode_or_error(_raw_blob(body))
    assert (result is not None) == (closed and depth <= 32)


# --- hostile input: each named malformation ---------------------------------------

ROOT_OK = _begin("") + _words(END_NODE, END)


def test_minimal_and_nop_tolerant_blobs_decode() -> None:
    assert decode_fdt(_raw_blob(ROOT_OK)) == FdtNode("")
    nops = _words(NOP) + _begin("") + _words(NOP, END_NODE, NOP, NOP, END)
    assert decode_fdt(_raw_blob(nops)) == FdtNode("")
    assert decode_fdt(_patch_u32(SAMPLE, 20, 16)) == _sample_tree()  # version 16


@pytest.mark.parametrize(
    ("blob", "kwargs", "cause"),
    [
        (b"\xd0\x0d\xfe", {}, "truncated"),
        (SAMPLE[:-1], {}, "totalsize"),
        (_patch_u32(SAMPLE, 4, 2**32 - 1), {}, "totalsize"),
        (SAMPLE, {"max_size": 64}, "max_size"),
        (_patch_u32(SAMPLE, 4, 20), {}, "smaller than the header"),
        (_raw_blob(ROOT_OK, version=15), {}, "version"),
        (_raw_blob(ROOT_OK, last_comp=18), {}, "version"),
        (_patch_u32(SAMPLE, 8, 58), {}, "structure block"),
        (_patch_u32(SAMPLE, 8, 2**32 - 4), {}, "structure block"),
        (_patch_u32(SAMPLE, 32, 1 << 20), {}, "strings block"),
        (_patch_u32(SAMPLE, 16, 44), {}, "memory reservation block"),
        (_raw_blob(ROOT_OK, rsv=_words(0, 1, 0, 1)), {}, "not terminated"),
        (_raw_blob(_begin("") + _words(7)), {}, "invalid token 0x7"),
        (_raw_blob(_begin("") + _words(BEGIN) + b"abcd"), {}, "NUL-terminated"),
        (_raw_blob(_begin("") + _prop(b"", 9) + _words(END_NODE, END), b"a\0"),
         {}, "nameoff 9 outside"),
        (_raw_blob(_begin("") + _prop(b"", 0) + _words(END_NODE, END), b"abc"),
         {}, "nameoff 0 not NUL-terminated"),
        (_raw_blob(_begin("") + _prop(b"", 0, length=64) + _words(END_NODE, END),
                   b"a\0"), {}, "length 64"),
        (_raw_blob(_begin("") + _words(PROP, 0)), {}, "property header"),
        (_raw_blob(_begin("") + _begin("a") * 40), {}, "depth"),
        (_raw_blob(_begin("") + _begin("a") + _words(END_NODE, END_NODE)),
         {}, "FDT_END"),
        (_raw_blob(_begin("") + _words(END)), {}, "unclosed"),
        (_raw_blob(_words(END)), {}, "root"),
        (_raw_blob(_words(END_NODE, END)), {}, "FDT_END_NODE without"),
        (_raw_blob(_prop(b"", 0) + ROOT_OK, b"a\0"), {}, "FDT_PROP outside"),
        (_raw_blob(ROOT_OK[:-4] + _begin("") + _words(END_NODE, END)),
         {}, "FDT_BEGIN_NODE after the root"),
        (_raw_blob(ROOT_OK[:-4] + _prop(b"", 0) + _words(END), b"a\0"),
         {}, "FDT_PROP after the root"),
        (_raw_blob(ROOT_OK[:-4] + _words(5, END)), {}, "0x5 after the root"),
        (_raw_blob(_begin("/") + _words(END_NODE, END)), {}, "root node name"),
        (_raw_blob(_begin("") + _begin("bad name") + _words(END_NODE, END_NODE, END)),
         {}, "invalid node name"),
        (_raw_blob(_begin("") + _begin("x" * 32) + _words(END_NODE, END_NODE, END)),
         {}, "invalid node name"),
        (_raw_blob(_begin("") + _begin("\xff") + _words(END_NODE, END_NODE, END)),
         {}, "invalid node name"),
        (_raw_blob(_begin("") + _prop(b"", 0) + ROOT_OK[8:], b"bad name\0"),
         {}, "invalid property name"),
        (_raw_blob(_begin("") + _prop(b"", 0) + _prop(b"", 2) + ROOT_OK[8:],
                   b"a\0a\0"), {}, "duplicate property 'a'"),
        (_raw_blob(_begin("") + (_begin("n") + _words(END_NODE)) * 2 + ROOT_OK[8:]),
         {}, "duplicate child 'n'"),
        (_raw_blob(_begin("") + _begin("n") + _words(END_NODE) + _prop(b"", 0)
                   + ROOT_OK[8:], b"a\0"), {}, "property after a subnode"),
    ],
)  # fmt: skip
def test_malformations_name_their_cause(blob: bytes, kwargs: dict[str, int], cause: str) -> None:
    assert cause in _error(blob, **kwargs)


def test_error_carries_offset_and_is_value_error() -> None:
    with pytest.raises(FdtError) as info:
        decode_fdt(b"\0" * 64)
    assert info.value.offset == 0
    assert "magic" in info.value.reason
    assert isinstance(info.value, ValueError)
    with pytest.raises(FdtError) as info:
        decode_fdt(_raw_blob(_begin("") + _words(7)))
    assert info.value.offset == 48


# --- getters, setters and encoder validation -------------------------------------


def test_getters_reject_missing_and_malformed_values() -> None:
    node = FdtNode("").add_child("kho").add_child("sub")
    node.set_bytes("three", b"abc")
    node.set_bytes("two-strs", b"a\0b\0")
    node.set_bytes("no-nul", b"abc")
    node.set_bytes("latin", b"\xff\0")
    cases = [
        (node.get_u32, "absent", "missing property 'absent'"),
        (node.get_u32, "three", "u32 needs 4"),
        (node.get_u64, "three", "u64 needs 8"),
        (node.get_u64_array, "three", "not a multiple of 8"),
        (node.get_str, "two-strs", "one NUL-terminated string"),
        (node.get_str, "no-nul", "one NUL-terminated string"),
        (node.get_str, "latin", "utf-8"),
    ]
    for getter, name, cause in cases:
        with pytest.raises(FdtError, match=re.escape(cause)) as info:
            getter(name)
        assert str(info.value).startswith("/kho/sub: ")
    node.set_str("s", "héllo")
    assert node.get_str("s") == "héllo"
    node.set_u64_array("none", [])
    assert node.get_u64_array("none") == []


def test_setters_and_encoder_reject_bad_input() -> None:
    root = FdtNode("")
    for bad in ["", "x" * 32, "bad name", "a/b", "ü", "a@"]:
        with pytest.raises(ValueError, match="invalid node name"):
            root.add_child(bad)
    for bad in ["", "p" * 32, "bad name", "ü"]:
        with pytest.raises(ValueError, match="invalid property name"):
            root.set_bytes(bad, b"")
    with pytest.raises(ValueError, match="u32"):
        root.set_u32("v", 2**32)
    with pytest.raises(ValueError, match="u64"):
        root.set_u64("v", -1)
    with pytest.raises(ValueError, match="NUL"):
        root.set_str("v", "a\0b")
    root.add_child("dup")
    with pytest.raises(ValueError, match="duplicate"):
        root.add_child("dup")
    with pytest.raises(ValueError, match="root node"):
        encode_fdt(FdtNode("x"))
    with pytest.raises(ValueError, match="u32"):
        encode_fdt(FdtNode(""), boot_cpuid_phys=-1)
    with pytest.raises(ValueError, match="invalid node name"):
        encode_fdt(FdtNode("", children=[FdtNode("bad name")]))
    with pytest.raises(ValueError, match="duplicate"):
        encode_fdt(FdtNode("", children=[FdtNode("a"), FdtNode("a")]))
    with pytest.raises(ValueError, match="invalid property name"):
        encode_fdt(FdtNode("", properties={"bad name": b""}))
