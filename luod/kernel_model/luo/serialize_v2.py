"""The `luo-v2` LUO root: a raw `struct luo_ser` instead of a device tree.

Linux's 2026 series replaced the FDT that 6.19 hands over for LUO with a packed struct
that carries its own compatible string (reference/kernel.md §2.3: the `luo-abi-header`
property points at `struct luo_ser`; the session and FLB nodes are folded into it). This
module owns that struct's byte layout and nothing else; `serialize` registers it beside
`luo-v1` and does the allocation, the tables and the dispatch by compatible.

Layout (little-endian, 80 bytes, at the start of one preserved page):

    offset  size  field
         0    48  char compatible[48]   "luo-v2", NUL padded (LIVEUPDATE_HNDL_COMPAT_LENGTH)
        48     4  u32 header_size       80: a reader refuses any other size
        52     4  u32 flags             0: no flag is defined, a reader refuses any
        56     8  u64 liveupdate_number
        64     8  u64 sessions          phys of the session table (`serialize`'s layout)
        72     8  u64 flbs              phys of the FLB table (`serialize`'s layout)

In the emulation the KHO root's `LUO` node points at this struct with its ordinary
`preserved-data` property, which plays the role of Linux's `luo-abi-header`. A kernel that
reads only `luo-v1` finds no FDT there and panics, as Linux's `luo_early_startup` does.
"""

from __future__ import annotations

import struct

COMPATIBLE = "luo-v2"
COMPAT_LEN = 48
LUO_SER = struct.Struct("<48sIIQQQ")


class RootCorrupt(ValueError):
    """The bytes are not a well-formed `luo-v2` root."""


def encode(number: int, sessions_phys: int, flbs_phys: int) -> bytes:
    return LUO_SER.pack(COMPATIBLE.encode(), LUO_SER.size, 0, number, sessions_phys, flbs_phys)


def embedded_compatible(blob: bytes) -> str | None:
    """The compatible string a raw LUO struct starts with, or None if there is none."""
    head, nul, _ = blob[:COMPAT_LEN].partition(b"\0")
    if not nul or not head or not head.isascii() or not head.decode().isprintable():
        return None
    return head.decode()


def decode(blob: bytes) -> tuple[int, int, int]:
    """(liveupdate number, sessions phys, flbs phys) of a `luo-v2` root."""
    if len(blob) < LUO_SER.size:
        raise RootCorrupt(f"luo_ser is {len(blob)} bytes, expected {LUO_SER.size}")
    raw, size, flags, number, sessions, flbs = LUO_SER.unpack_from(blob)
    if embedded_compatible(raw) != COMPATIBLE:
        raise RootCorrupt(f"luo_ser compatible is not {COMPATIBLE!r}")
    if size != LUO_SER.size:
        raise RootCorrupt(f"luo_ser header_size is {size}, expected {LUO_SER.size}")
    if flags:
        raise RootCorrupt(f"luo_ser has unknown flags {flags:#x}")
    return number, sessions, flbs
