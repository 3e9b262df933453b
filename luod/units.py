"""Human-readable sizes: parsing `64K`/`2M`/`1GiB` and printing the exact inverse.

Owned here because every layer speaks sizes: the daemon's `--ram` and `--hugetlb`, the
clients' `--memory` and `--page-size`, and log lines. All multiples are binary (K = 1024),
as the kernel's own `memparse()` treats them; there is no decimal (SI) form. The module is
pure stdlib so the thin client can import it.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_UNITS: dict[str, int] = {
    "": 1,
    "K": 1 << 10,
    "M": 1 << 20,
    "G": 1 << 30,
    "T": 1 << 40,
}

# A decimal integer, an optional unit letter, and an optional "iB" after the letter
# ("2M", "2m", "2MiB", "2mib"). A bare "B" suffix is not accepted: "2MB" reads as decimal
# megabytes to many people, so we refuse it rather than guess.
_SIZE_RE = re.compile(r"(?P<num>[0-9]+)(?:(?P<unit>[kmgt])(?:ib)?)?", re.IGNORECASE)

# Largest unit first, for format_size.
_FORMAT_ORDER: tuple[tuple[str, int], ...] = (
    ("T", 1 << 40),
    ("G", 1 << 30),
    ("M", 1 << 20),
    ("K", 1 << 10),
)


def parse_size(text: str) -> int:
    """Parse a byte count written as a plain integer or with a binary unit suffix.

    Accepts `4096`, `64K`, `2M`, `1G`, `1T`, the same in lowercase, and the `KiB`,
    `MiB`, `GiB`, `TiB` forms (any case). Surrounding whitespace is ignored.

    Raises:
        ValueError: the text is not such a size; the message quotes the text.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid size {text!r}: expected an integer with an optional binary unit "
            "(K, M, G, T or KiB, MiB, GiB, TiB), e.g. 4096, 64K, 2M, 1GiB"
        )
    unit = (match.group("unit") or "").upper()
    return int(match.group("num")) * _UNITS[unit]


def format_size(n: int) -> str:
    """Format a byte count with the largest binary unit that divides it exactly.

    `2097152` gives `"2M"`, `3072` gives `"3K"`, `1000` gives `"1000"`, `0` gives `"0"`.
    The result always parses back to `n` with `parse_size`.

    Raises:
        ValueError: `n` is negative.
    """
    if n < 0:
        raise ValueError(f"invalid size {n}: must not be negative")
    if n == 0:
        return "0"
    for suffix, factor in _FORMAT_ORDER:
        if n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)
