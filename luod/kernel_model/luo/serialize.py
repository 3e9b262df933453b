"""LUO's handover in emulated memory: the LUO root, in the negotiated format, and the
session, file and FLB tables it points to.

The KHO subtree "LUO" holds the root. Root formats are registered in `ROOT_FORMATS`, one
per `compatible` (the LUO layer of negotiation: `prepare` writes the one chosen for the
target, and the next kernel reads it if its image lists it):
- `luo-v1` (Linux 6.19), this module: a flattened device tree

    / { compatible = "luo-v1"; liveupdate-number = <u64>;
        luo-session { compatible = "luo-session-v1"; luo-session-header = <u64 phys>; };
        luo-flb { compatible = "luo-flb-v1"; luo-flb-header = <u64 phys>; }; };

- `luo-v2` (2026): a raw `struct luo_ser` with an embedded compatible, the session and FLB
  nodes folded into it (layout in `serialize_v2`).

A root's format is recognised from its bytes alone (`root_compatible`: an FDT's
`compatible` property, or the string a raw struct starts with), since the next kernel has
nothing else to go on; a root whose format it does not read panics it.

Tables (little-endian, in preserved pages), the same under both roots:
- sessions: {u64 count} then 88-byte entries {char name[64]; u64 files phys; u64 files
  count; u64 files pages};
- files of one session: 64-byte entries {char compatible[48]; u64 data; u64 token};
- FLBs: {u64 pages; u64 count} then 64-byte entries {char name[48]; u64 data; u64 count}.

The next kernel reads the root at boot (an unreadable root panics it) and the tables on the
first open of the LUO device (a corrupt table or an unknown file format makes every open
fail with EIO). Table pages are freed once read; file records belong to their handlers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import attrs

from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory
from luod.kernel_model.fdt import FDT_MAGIC, FdtError, FdtNode, decode_fdt, encode_fdt
from luod.kernel_model.kho.incoming import KhoIn
from luod.kernel_model.kho.outgoing import KhoOut
from luod.kernel_model.luo import serialize_v2

SUBTREE = "LUO"
COMPATIBLE = "luo-v1"
SESSION_COMPATIBLE = "luo-session-v1"
FLB_COMPATIBLE = "luo-flb-v1"
NAME_LEN = 64
COMPAT_LEN = 48
SESSION_ENTRY = struct.Struct("<64sQQQ")
FILE_ENTRY = struct.Struct("<48sQQ")
FLB_ENTRY = struct.Struct("<48sQQ")
SESSION_HEADER = struct.Struct("<Q")
FLB_HEADER = struct.Struct("<QQ")


class LuoRootUnreadable(Exception):
    """The LUO root cannot be used: the next kernel panics (continuing could leak data)."""


class LuoTablesCorrupt(Exception):
    """Sessions or FLBs cannot be deserialized: every open of the LUO device fails (EIO)."""


@attrs.frozen
class FileRecord:
    compatible: str
    data: int
    token: int


@attrs.frozen
class SessionRecord:
    name: str
    files: tuple[FileRecord, ...]


@attrs.frozen
class FlbRecord:
    compatible: str
    data: int
    count: int


@attrs.frozen
class IncomingRoot:
    compatible: str
    liveupdate_number: int
    sessions_phys: int
    flbs_phys: int
    pages: tuple[int, int]  # the root blob's own (pfn, pages), freed once read


def _pages(nbytes: int) -> int:
    return max(1, -(-nbytes // PAGE_SIZE))


def _fixed(text: str, length: int) -> bytes:
    raw = text.encode()
    if len(raw) >= length:
        raise ValueError(f"{text!r} does not fit a {length}-byte field")
    return raw


# -- root formats ----------------------------------------------------------------------------


def _encode_v1(number: int, sessions_phys: int, flbs_phys: int) -> bytes:
    root = FdtNode("")
    root.set_str("compatible", COMPATIBLE)
    root.set_u64("liveupdate-number", number)
    node = root.add_child("luo-session")
    node.set_str("compatible", SESSION_COMPATIBLE)
    node.set_u64("luo-session-header", sessions_phys)
    node = root.add_child("luo-flb")
    node.set_str("compatible", FLB_COMPATIBLE)
    node.set_u64("luo-flb-header", flbs_phys)
    return encode_fdt(root)


def _decode_v1(blob: bytes) -> tuple[int, int, int]:
    tree = decode_fdt(blob, max_size=_pages(len(blob)) * PAGE_SIZE)
    sessions = tree.child("luo-session")
    flbs = tree.child("luo-flb")
    if sessions is None or flbs is None:
        raise LuoRootUnreadable("LUO root lacks its luo-session or luo-flb node")
    if sessions.get_str("compatible") != SESSION_COMPATIBLE:
        raise LuoRootUnreadable("LUO session node has an unknown compatible")
    if flbs.get_str("compatible") != FLB_COMPATIBLE:
        raise LuoRootUnreadable("LUO FLB node has an unknown compatible")
    return (
        tree.get_u64("liveupdate-number"),
        sessions.get_u64("luo-session-header"),
        flbs.get_u64("luo-flb-header"),
    )


@attrs.frozen
class RootFormat:
    """A LUO root format: (number, sessions phys, flbs phys) to bytes and back. `decode`
    raises ValueError (FdtError, RootCorrupt) or LuoRootUnreadable on bad bytes."""

    compatible: str
    encode: Callable[[int, int, int], bytes]
    decode: Callable[[bytes], tuple[int, int, int]]


ROOT_FORMATS: dict[str, RootFormat] = {
    f.compatible: f
    for f in (
        RootFormat(COMPATIBLE, _encode_v1, _decode_v1),
        RootFormat(serialize_v2.COMPATIBLE, serialize_v2.encode, serialize_v2.decode),
    )
}


def root_compatible(blob: bytes) -> str | None:
    """The format a LUO root's bytes claim: an FDT's `compatible`, or the string a raw
    struct starts with; None when they claim nothing recognisable."""
    if blob[:4] == FDT_MAGIC.to_bytes(4, "big"):
        try:
            return decode_fdt(blob, max_size=_pages(len(blob)) * PAGE_SIZE).get_str("compatible")
        except FdtError:
            return None
    return serialize_v2.embedded_compatible(blob)


@attrs.define
class WrittenLuo:
    """What `write` allocated, so that a cancel can give it back."""

    allocations: list[tuple[int, int]] = attrs.field(factory=list)  # (pfn, pages)


def write(
    kho: KhoOut,
    memory: PhysicalMemory,
    number: int,
    sessions: Sequence[SessionRecord],
    flbs: Sequence[FlbRecord],
    *,
    compatible: str = COMPATIBLE,
    session_pages: int | None = None,
    file_pages: int | None = None,
) -> WrittenLuo:
    """Write every table and the root in format `compatible`, and add the "LUO" KHO
    subtree. All or nothing.

    `session_pages`/`file_pages` fix the table sizes as 6.19 does (None: as needed)."""
    root_format = ROOT_FORMATS[compatible]
    written = WrittenLuo()

    def alloc(npages: int) -> int:
        pfn = kho.alloc_preserved(npages)
        written.allocations.append((pfn, npages))
        return pfn

    try:
        entries = bytearray()
        for session in sessions:
            files_phys, pages = 0, 0
            if session.files:
                pages = file_pages or _pages(FILE_ENTRY.size * len(session.files))
                pfn = alloc(pages)
                table = b"".join(
                    FILE_ENTRY.pack(_fixed(f.compatible, COMPAT_LEN), f.data, f.token)
                    for f in session.files
                )
                memory.write(pfn, table)
                files_phys = pfn << PAGE_SHIFT
            entries += SESSION_ENTRY.pack(
                _fixed(session.name, NAME_LEN), files_phys, len(session.files), pages
            )
        table = SESSION_HEADER.pack(len(sessions)) + bytes(entries)
        sessions_pfn = alloc(session_pages or _pages(len(table)))
        memory.write(sessions_pfn, table)

        flb_body = b"".join(
            FLB_ENTRY.pack(_fixed(f.compatible, COMPAT_LEN), f.data, f.count) for f in flbs
        )
        flb_pages = _pages(FLB_HEADER.size + len(flb_body))
        flbs_pfn = alloc(flb_pages)
        memory.write(flbs_pfn, FLB_HEADER.pack(flb_pages, len(flbs)) + flb_body)

        blob = root_format.encode(number, sessions_pfn << PAGE_SHIFT, flbs_pfn << PAGE_SHIFT)
        root_pfn = alloc(_pages(len(blob)))
        memory.write(root_pfn, blob)
        kho.add_subtree(SUBTREE, root_pfn << PAGE_SHIFT, len(blob))
    except BaseException:
        discard(kho, written)
        raise
    return written


def discard(kho: KhoOut, written: WrittenLuo) -> None:
    """Undo `write` (the cancel path): drop the subtree, free every table."""
    if SUBTREE in kho.subtrees:
        kho.remove_subtree(SUBTREE)
    for pfn, npages in reversed(written.allocations):
        kho.free_preserved(pfn, npages)
    written.allocations.clear()


# -- the next kernel ------------------------------------------------------------------------


def _restore(kho_in: KhoIn, phys: int, nbytes: int, what: str) -> tuple[int, int]:
    if phys % PAGE_SIZE or phys <= 0:
        raise LuoTablesCorrupt(f"{what} at {phys:#x} is not page aligned")
    pfn, npages = phys >> PAGE_SHIFT, _pages(nbytes)
    try:
        kho_in.restore_pages(pfn, npages)
    except Exception as exc:
        raise LuoTablesCorrupt(f"{what} at {phys:#x} was not preserved: {exc}") from exc
    return pfn, npages


def read_root(
    memory: PhysicalMemory, kho_in: KhoIn, readable: frozenset[str]
) -> IncomingRoot | None:
    """Early boot: the LUO root, or None when the previous kernel handed none over.

    Raises LuoRootUnreadable for a root this kernel cannot read: a format it does not
    list in `readable`, or bytes its reader refuses."""
    if SUBTREE not in kho_in.subtrees:
        return None
    phys, size = kho_in.subtrees[SUBTREE]
    try:
        pfn, npages = _restore(kho_in, phys, size, "LUO root")
    except LuoTablesCorrupt as exc:
        raise LuoRootUnreadable(f"LUO root is corrupt: {exc}") from exc
    blob = memory.read_at(phys, size)
    compatible = root_compatible(blob)
    if compatible is None or compatible not in readable or compatible not in ROOT_FORMATS:
        claimed = "unrecognisable" if compatible is None else repr(compatible)
        raise LuoRootUnreadable(f"LUO root is {claimed}, this kernel reads {sorted(readable)}")
    try:
        number, sessions_phys, flbs_phys = ROOT_FORMATS[compatible].decode(blob)
    except ValueError as exc:  # FdtError, RootCorrupt
        raise LuoRootUnreadable(f"LUO root is corrupt: {exc}") from exc
    return IncomingRoot(
        compatible=compatible,
        liveupdate_number=number,
        sessions_phys=sessions_phys,
        flbs_phys=flbs_phys,
        pages=(pfn, npages),
    )


def _text(raw: bytes, what: str) -> str:
    head, nul, _ = raw.partition(b"\0")
    if not nul or not head:
        raise LuoTablesCorrupt(f"{what} is empty or not NUL-terminated")
    try:
        return head.decode()
    except UnicodeDecodeError:
        raise LuoTablesCorrupt(f"{what} is not valid UTF-8") from None


def read_tables(
    memory: PhysicalMemory, kho_in: KhoIn, root: IncomingRoot
) -> tuple[list[SessionRecord], list[FlbRecord], list[tuple[int, int]]]:
    """First open of the LUO device: every session, file and FLB entry.

    Returns the records and the table pages (pfn, pages) to free once consumed."""
    pages: list[tuple[int, int]] = []
    limit = memory.size_bytes

    def load(phys: int, nbytes: int, what: str) -> bytes:
        if phys + nbytes > limit:
            raise LuoTablesCorrupt(f"{what} runs past the end of RAM")
        pages.append(_restore(kho_in, phys, nbytes, what))
        return memory.read_at(phys, nbytes)

    def peek(phys: int, nbytes: int, what: str) -> bytes:
        if phys <= 0 or phys + nbytes > limit:
            raise LuoTablesCorrupt(f"{what} at {phys:#x} lies outside RAM")
        return memory.read_at(phys, nbytes)

    (count,) = SESSION_HEADER.unpack(peek(root.sessions_phys, SESSION_HEADER.size, "session table"))
    if count > limit // SESSION_ENTRY.size:
        raise LuoTablesCorrupt(f"session table claims {count} sessions")
    body = load(
        root.sessions_phys, SESSION_HEADER.size + count * SESSION_ENTRY.size, "session table"
    )
    sessions: list[SessionRecord] = []
    seen: set[str] = set()
    for i in range(count):
        raw, files_phys, nfiles, _ = SESSION_ENTRY.unpack_from(
            body, SESSION_HEADER.size + i * SESSION_ENTRY.size
        )
        name = _text(raw, f"session entry {i}")
        if name in seen:
            raise LuoTablesCorrupt(f"session {name!r} appears twice")
        seen.add(name)
        files: list[FileRecord] = []
        if nfiles:
            if nfiles > limit // FILE_ENTRY.size:
                raise LuoTablesCorrupt(f"session {name!r} claims {nfiles} files")
            table = load(files_phys, nfiles * FILE_ENTRY.size, f"file table of {name!r}")
            tokens: set[int] = set()
            for j in range(nfiles):
                compat, data, token = FILE_ENTRY.unpack_from(table, j * FILE_ENTRY.size)
                if token in tokens:
                    raise LuoTablesCorrupt(f"session {name!r} lists token {token:#x} twice")
                tokens.add(token)
                files.append(
                    FileRecord(_text(compat, f"{name}/{token:#x} compatible"), data, token)
                )
        sessions.append(SessionRecord(name, tuple(files)))
    _, nflbs = FLB_HEADER.unpack(peek(root.flbs_phys, FLB_HEADER.size, "FLB table"))
    if nflbs > limit // FLB_ENTRY.size:
        raise LuoTablesCorrupt(f"FLB table claims {nflbs} entries")
    body = load(root.flbs_phys, FLB_HEADER.size + nflbs * FLB_ENTRY.size, "FLB table")
    flbs = [
        FlbRecord(_text(raw, f"FLB entry {i}"), data, cnt)
        for i, (raw, data, cnt) in enumerate(
            FLB_ENTRY.unpack_from(body, FLB_HEADER.size + i * FLB_ENTRY.size) for i in range(nflbs)
        )
    ]
    return sessions, flbs, pages
