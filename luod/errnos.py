"""Symbolic errno names: the one place luod turns an errno value into `"EBUSY"` and back.

Owned at the top of the package because every layer names errnos the same way: the kernel
model in its errors, the protocol in error frames, the clients in their JSON and messages.
Pure stdlib, so the thin clients import it for free.
"""

from __future__ import annotations

import errno as _errno

__all__ = ["errno_name", "errno_value"]


def errno_name(code: int) -> str:
    """The symbolic name of an errno value (`16` -> `"EBUSY"`); `"E<n>"` for a value this
    platform has no name for, so a name is always printable."""
    return _errno.errorcode.get(code, f"E{code}")


def errno_value(name: str) -> int | None:
    """The value of a symbolic errno name (`"EBUSY"` -> 16), None when unknown."""
    value = getattr(_errno, name, None)
    return value if isinstance(value, int) and name.startswith("E") else None
