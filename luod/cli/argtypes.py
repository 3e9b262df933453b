"""Converters for argparse `type=`: tokens, sizes, seal lists, inherited memfds, counts,
seconds.

Owns the client-side validation docs/cli.md asks for, for every client, so bad input is a
usage error (exit 2) before anything is sent, and the same input is read the same way by
`luoctl` and `luod-vmm`. Each function raises `argparse.ArgumentTypeError`, whose message
argparse prefixes with the option's name.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Final

from luod.units import parse_size

__all__ = [
    "SEALS",
    "TOKEN_MAX",
    "inherited_memfd",
    "positive_int",
    "seal_list",
    "seconds",
    "size",
    "token",
]

TOKEN_MAX: Final = 2**64 - 1
"""Tokens are u64 (the kernel's session token type)."""

SEALS: Final = ("seal", "shrink", "grow", "write", "future_write", "exec")
"""The seal names of CLI.md, in the order of the F_SEAL_* bits."""


def token(text: str) -> int:
    """A u64 token written in decimal or with a `0x` prefix (also `0o`, `0b`: `int(x, 0)`)."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid token {text!r}: expected an integer, decimal or 0x hex"
        ) from None
    if not 0 <= value <= TOKEN_MAX:
        raise argparse.ArgumentTypeError(f"invalid token {text!r}: must be 0 .. 2**64-1")
    return value


def size(text: str) -> int:
    """A byte count: `4096`, `64K`, `2M`, `1G`, `1T` (binary units, `luod.units`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seal_list(text: str) -> list[str]:
    """A comma list of seal names; empty items are ignored, repeats collapse."""
    seals: list[str] = []
    for item in text.split(","):
        name = item.strip()
        if not name:
            continue
        if name not in SEALS:
            raise argparse.ArgumentTypeError(
                f"unknown seal {name!r}: expected a comma list of {', '.join(SEALS)}"
            )
        if name not in seals:
            seals.append(name)
    return seals


def inherited_memfd(text: str) -> int:
    """An fd number this process inherited, which must be an open memfd.

    Checked through `/proc/self/fd/N`, whose link reads `/memfd:NAME (deleted)` for a
    memfd: the daemon copies a memfd's seals too, and refusing other fds here gives a
    clear message instead of a daemon error about a file it cannot see.
    """
    try:
        fd = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid fd {text!r}: expected a number") from None
    if fd < 0:
        raise argparse.ArgumentTypeError(f"invalid fd {text!r}: must not be negative")
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        raise argparse.ArgumentTypeError(f"fd {fd} is not open") from None
    if not target.startswith("/memfd:"):
        raise argparse.ArgumentTypeError(f"fd {fd} is not a memfd (it is {target})")
    return fd


def positive_int(text: str) -> int:
    """A count: a decimal integer of at least 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be at least 1")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return value
