"""Flattened device tree (DTB) encoding and hostile-input decoding for KHO blobs.

This module owns the on-RAM byte format of the Kexec HandOver (KHO) root blob:
the outgoing emulated kernel serialises an :class:`FdtNode` tree as a real DTB
(version 17, readable by ``dtc -I dtb -O dts``), and the incoming kernel parses
it back from untrusted memory.  Because those bytes cross a trust boundary,
:func:`decode_fdt` bounds every offset, length and nesting level and turns each
malformation into an :class:`FdtError` with a precise reason; it never loops
per byte and never recurses, so hostile input can neither crash nor hang it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable

import attrs

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16

_HEADER = struct.Struct(">10I")
_U32 = struct.Struct(">I")
_PROP_HDR = struct.Struct(">II")
_RSV_ENTRY = struct.Struct(">QQ")
_CHARS = r"0-9A-Za-z,._+\-"
_NODE_NAME_RE = re.compile(rf"[{_CHARS}]{{1,31}}(?:@[{_CHARS}]+)?")
_PROP_NAME_RE = re.compile(rf"[{_CHARS}?#]{{1,31}}")
_TOKEN_NAMES = {1: "FDT_BEGIN_NODE", 2: "FDT_END_NODE", 3: "FDT_PROP", 4: "FDT_NOP"}


class FdtError(ValueError):
    """Malformed DTB or property value; ``offset`` is the blob offset when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = "" if offset is None else f" (at offset {offset:#x})"
        super().__init__(reason + where)


def _node_name_error(name: str) -> str | None:
    if _NODE_NAME_RE.fullmatch(name):
        return None
    return f"invalid node name {name!r} (DT charset, 1..31 chars, optional @unit)"


def _prop_name_error(name: str) -> str | None:
    if _PROP_NAME_RE.fullmatch(name):
        return None
    return f"invalid property name {name!r} (DT charset, 1..31 chars)"


def _check_uint(value: int, bits: int, what: str) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what}: {value!r} does not fit in a u{bits}")


def _padded(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


@attrs.define
class FdtNode:
    """One device tree node (the root is named ``""``); values are big-endian bytes."""

    name: str
    properties: dict[str, bytes] = attrs.field(factory=dict)
    children: list[FdtNode] = attrs.field(factory=list)
    _path: str = attrs.field(default="", init=False, eq=False, repr=False)

    @property
    def path(self) -> str:
        """Full path when built via :meth:`add_child` or decoded, else the bare name."""
        return self._path or self.name or "/"

    def child(self, name: str) -> FdtNode | None:
        return next((c for c in self.children if c.name == name), None)

    def add_child(self, name: str) -> FdtNode:
        if (reason := _node_name_error(name)) is not None:
            raise ValueError(reason)
        if self.child(name) is not None:
            raise ValueError(f"{self.path}: duplicate child node {name!r}")
        node = FdtNode(name)
        node._path = f"{self.path.rstrip('/')}/{name}"
        self.children.append(node)
        return node

    def set_bytes(self, name: str, value: bytes) -> None:
        if (reason := _prop_name_error(name)) is not None:
            raise ValueError(reason)
        self.properties[name] = bytes(value)

    def set_u32(self, name: str, value: int) -> None:
        _check_uint(value, 32, f"{self.path}:{name}")
        self.set_bytes(name, _U32.pack(value))

    def set_u64(self, name: str, value: int) -> None:
        self.set_u64_array(name, [value])

    def set_u64_array(self, name: str, values: Iterable[int]) -> None:
        vals = list(values)
        for v in vals:
            _check_uint(v, 64, f"{self.path}:{name}")
        self.set_bytes(name, struct.pack(f">{len(vals)}Q", *vals))

    def set_str(self, name: str, value: str) -> None:
        if "\0" in value:
            raise ValueError(f"{self.path}:{name}: string contains NUL")
        self.set_bytes(name, value.encode("utf-8") + b"\0")

    def _get(self, name: str) -> bytes:
        value = self.properties.get(name)
        if value is None:
            raise FdtError(f"{self.path}: missing property {name!r}")
        return value

    def _get_sized(self, name: str, size: int, kind: str) -> bytes:
        value = self._get(name)
        if len(value) != size:
            got = f"{len(value)} bytes, {kind} needs {size}"
            raise FdtError(f"{self.path}: property {name!r} has {got}")
        return value

    def get_u32(self, name: str) -> int:
        return int.from_bytes(self._get_sized(name, 4, "u32"), "big")

    def get_u64(self, name: str) -> int:
        return int.from_bytes(self._get_sized(name, 8, "u64"), "big")

    def get_u64_array(self, name: str) -> list[int]:
        value = self._get(name)
        if len(value) % 8:
            got = f"{len(value)} bytes, not a multiple of 8"
            raise FdtError(f"{self.path}: u64 array property {name!r} has {got}")
        return list(struct.unpack(f">{len(value) // 8}Q", value))

    def get_str(self, name: str) -> str:
        value = self._get(name)
        if not value.endswith(b"\0") or b"\0" in value[:-1]:
            what = "is not one NUL-terminated string"
            raise FdtError(f"{self.path}: property {name!r} {what}")
        try:
            return value[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FdtError(f"{self.path}: property {name!r}: {exc}") from None


def encode_fdt(root: FdtNode, *, boot_cpuid_phys: int = 0) -> bytes:
    """Serialise ``root`` as a version-17 DTB with an empty memory reservation map."""
    if root.name != "":
        raise ValueError(f"root node must be named '', got {root.name!r}")
    _check_uint(boot_cpuid_phys, 32, "boot_cpuid_phys")
    chunks: list[bytes] = []
    strings: dict[str, int] = {}
    strings_size = 0

    def emit(node: FdtNode, path: str) -> None:
        nonlocal strings_size
        chunks.append(_U32.pack(FDT_BEGIN_NODE) + _padded(node.name.encode() + b"\0"))
        for pname, value in node.properties.items():
            if (reason := _prop_name_error(pname)) is not None:
                raise ValueError(f"{path}: {reason}")
            if pname not in strings:
                strings[pname] = strings_size
                strings_size += len(pname) + 1
            prop_hdr = _PROP_HDR.pack(len(value), strings[pname])
            chunks.append(_U32.pack(FDT_PROP) + prop_hdr + _padded(bytes(value)))
        seen: set[str] = set()
        for child in node.children:
            if (reason := _node_name_error(child.name)) is not None:
                raise ValueError(f"{path}: {reason}")
            if child.name in seen:
                raise ValueError(f"{path}: duplicate child node {child.name!r}")
            seen.add(child.name)
            emit(child, f"{path.rstrip('/')}/{child.name}")
        chunks.append(_U32.pack(FDT_END_NODE))

    emit(root, "/")
    chunks.append(_U32.pack(FDT_END))
    dt_struct = b"".join(chunks)
    dt_strings = b"".join(n.encode("ascii") + b"\0" for n in strings)
    off_rsv = _HEADER.size
    off_struct = off_rsv + _RSV_ENTRY.size
    off_strings = off_struct + len(dt_struct)
    total = off_strings + len(dt_strings)
    header = _HEADER.pack(
        FDT_MAGIC, total, off_struct, off_strings, off_rsv, FDT_VERSION,
        FDT_LAST_COMP_VERSION, boot_cpuid_phys, len(dt_strings), len(dt_struct),
    )  # fmt: skip
    return header + _RSV_ENTRY.pack(0, 0) + dt_struct + dt_strings


def trim_fdt(raw: bytes | memoryview, *, max_size: int) -> bytes:
    """The blob alone, its header's `totalsize` bytes, out of a larger buffer such as the
    page it sits in (what `dtc` expects to read)."""
    view = memoryview(raw)
    _check_header(view, max_size)
    return bytes(view[: _HEADER.unpack_from(view)[1]])


def _check_header(raw: memoryview, max_size: int) -> tuple[bytes, int, int, int, int]:
    """Check header and block layout; return data and struct/strings start and end."""
    if len(raw) < _HEADER.size:
        raise FdtError(f"truncated: {len(raw)} bytes, the header needs {_HEADER.size}")
    fields = _HEADER.unpack_from(raw)
    magic, total, off_struct, off_strings, off_rsv, version, last_comp = fields[:7]
    size_strings, size_struct = fields[8:]
    if magic != FDT_MAGIC:
        raise FdtError(f"bad magic {magic:#010x}, expected {FDT_MAGIC:#010x}", 0)
    if version < 16 or last_comp > FDT_VERSION:
        versions = f"version {version}, last_comp_version {last_comp}"
        raise FdtError(f"unsupported {versions} (need >= 16, <= 17)", 20)
    if total > len(raw):
        raise FdtError(f"truncated: totalsize {total} > {len(raw)} bytes available", 4)
    if total > max_size:
        raise FdtError(f"totalsize {total} exceeds max_size {max_size}", 4)
    # A v16 header lacks size_dt_struct: its structure block runs to totalsize.
    hdr_size = _HEADER.size if version >= 17 else _HEADER.size - 4
    if total < hdr_size:
        raise FdtError(f"totalsize {total} is smaller than the header", 4)
    if version < 17:
        size_struct = max(total - off_struct, 0) & ~3
    for what, off, size, align in (
        ("memory reservation block", off_rsv, 0, 8),
        ("structure block", off_struct, size_struct, 4),
        ("strings block", off_strings, size_strings, 1),
    ):
        if off < hdr_size or off + size > total or off % align or size % align:
            raise FdtError(f"{what} at {off:#x}+{size:#x} out of bounds or misaligned")
    data = bytes(raw[:total])
    rsv_end = total - (total - off_rsv) % _RSV_ENTRY.size
    if (0, 0) not in _RSV_ENTRY.iter_unpack(data[off_rsv:rsv_end]):
        raise FdtError("memory reservation block not terminated in totalsize", off_rsv)
    struct_end, strings_end = off_struct + size_struct, off_strings + size_strings
    return data, off_struct, struct_end, off_strings, strings_end


def decode_fdt(
    blob: bytes | bytearray | memoryview,
    *,
    max_size: int = 1 << 20,
    max_depth: int = 32,
) -> FdtNode:
    """Parse an untrusted DTB into a tree of :class:`FdtNode`, or raise FdtError.

    ``max_depth`` counts the root as depth 1.  Memory reservations are checked for
    termination but otherwise ignored (KHO does not use them).
    """
    raw = memoryview(blob).cast("B")
    data, pos, end, str_off, str_end = _check_header(raw, max_size)
    root: FdtNode | None = None
    stack: list[tuple[FdtNode, set[str]]] = []  # open nodes and their child names
    while True:
        if pos + 4 > end:
            raise FdtError("structure block truncated: no FDT_END token", pos)
        token, tok_at, pos = _U32.unpack_from(data, pos)[0], pos, pos + 4
        if token == FDT_NOP:
            continue
        if token == FDT_END:
            if stack:
                unclosed = stack[-1][0].path
                raise FdtError(f"FDT_END inside unclosed node {unclosed}", tok_at)
            if root is None:
                raise FdtError("FDT_END before any root node", tok_at)
            return root
        if root is not None and not stack:
            tok = _TOKEN_NAMES.get(token, f"token {token:#x}")
            raise FdtError(f"{tok} after the root node; expected FDT_END", tok_at)
        if token == FDT_BEGIN_NODE:
            if len(stack) >= max_depth:
                raise FdtError(f"nesting depth exceeds max_depth {max_depth}", tok_at)
            nul = data.find(b"\0", pos, end)
            if nul < 0:
                raise FdtError("node name not NUL-terminated in structure block", pos)
            name = data[pos:nul].decode("latin-1")
            if not stack:
                if name:
                    raise FdtError(f"root node name must be empty, got {name!r}", pos)
                root = node = FdtNode("")
            else:
                parent, names = stack[-1]
                if (reason := _node_name_error(name)) is not None:
                    raise FdtError(f"{parent.path}: {reason}", pos)
                if name in names:
                    raise FdtError(f"{parent.path}: duplicate child {name!r}", pos)
                names.add(name)
                node = FdtNode(name)
                node._path = f"{parent.path.rstrip('/')}/{name}"
                parent.children.append(node)
            stack.append((node, set()))
            pos = (nul + 4) & ~3
        elif token == FDT_END_NODE:
            if not stack:
                raise FdtError("FDT_END_NODE without FDT_BEGIN_NODE", tok_at)
            stack.pop()
        elif token == FDT_PROP:
            if not stack:
                raise FdtError("FDT_PROP outside of any node", tok_at)
            pos = _decode_prop(data, pos, end, str_off, str_end, stack[-1][0])
        else:
            raise FdtError(f"invalid token {token:#x}", tok_at)


def _decode_prop(data: bytes, pos: int, end: int, str_off: int, str_end: int, node: FdtNode) -> int:
    """Decode the FDT_PROP body at ``pos`` into ``node``; return the next offset."""
    if node.children:
        raise FdtError(f"{node.path}: property after a subnode", pos - 4)
    if pos + 8 > end:
        raise FdtError("property header runs past the structure block", pos)
    length: int
    nameoff: int
    length, nameoff = _PROP_HDR.unpack_from(data, pos)
    value_at = pos + 8
    if length > end - value_at:
        raise FdtError(f"property length {length} runs past the structure block", pos)
    if nameoff >= str_end - str_off:
        raise FdtError(f"property nameoff {nameoff} outside the strings block", pos + 4)
    nul = data.find(b"\0", str_off + nameoff, str_end)
    if nul < 0:
        raise FdtError(f"name at nameoff {nameoff} not NUL-terminated", pos + 4)
    name = data[str_off + nameoff : nul].decode("latin-1")
    if (reason := _prop_name_error(name)) is not None:
        raise FdtError(f"{node.path}: {reason}", pos + 4)
    if name in node.properties:
        raise FdtError(f"{node.path}: duplicate property {name!r}", pos - 4)
    node.properties[name] = data[value_at : value_at + length]
    return (value_at + length + 3) & ~3
