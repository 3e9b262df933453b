"""memfd seals (F_ADD_SEALS / F_GET_SEALS), with Linux's bit values and their names.

The names are the lowercase member names (`"grow"`, `"future_write"`), the form the wire
and the CLI use; the values are those of include/uapi/linux/fcntl.h, which the memfd
records store. What each seal forbids is checked by the file operations (`memfd.file`).
"""

from __future__ import annotations

import enum
import errno

from luod.kernel_model.errors import KernelError


class Seal(enum.Flag):
    """memfd seals, with Linux's F_SEAL_* values."""

    SEAL = 0x1
    SHRINK = 0x2
    GROW = 0x4
    WRITE = 0x8
    FUTURE_WRITE = 0x10
    EXEC = 0x20

    @classmethod
    def from_names(cls, names: list[str]) -> Seal:
        """Seals named in lowercase (`["grow", "shrink"]`); unknown names fail EINVAL."""
        out = cls(0)
        for name in names:
            member = _SEAL_BY_NAME.get(name)
            if member is None:
                known = ", ".join(_SEAL_BY_NAME)
                raise KernelError(
                    f"unknown memfd seal {name!r} (known: {known})", errno=errno.EINVAL
                )
            out |= member
        return out

    def names(self) -> list[str]:
        """Lowercase names of the seals set, in bit order."""
        return [name for name, member in _SEAL_BY_NAME.items() if member in self]


_SEAL_BY_NAME: dict[str, Seal] = {m.name.lower(): m for m in Seal if m.name is not None}

WRITE_SEALS = Seal.WRITE | Seal.FUTURE_WRITE
"""Either forbids changing the contents (write, punch)."""
