"""LUO's global state machine and its configurable limits.

NORMAL -prepare-> PREPARED -freeze-> FROZEN -(kexec)-> UPDATED -finish-> NORMAL, with
cancel from PREPARED or FROZEN back to NORMAL (the LUO v3/v4 model; reference/kernel.md
§1.2). A kernel whose LUO root was unreadable is PANICKED and stays so until a cold boot.
"""

from __future__ import annotations

import enum

import attrs


class LuoState(enum.Enum):
    NORMAL = "normal"
    PREPARED = "prepared"
    FROZEN = "frozen"
    UPDATED = "updated"
    PANICKED = "panicked"


class LuoEvent(enum.Enum):
    PREPARE = "prepare"
    FREEZE = "freeze"
    CANCEL = "cancel"
    FINISH = "finish"


SESSION_NAME_MAX = 63  # bytes, plus the NUL of the 64-byte field


@attrs.frozen
class Limits:
    """None means unlimited (the 2026 chained-block design)."""

    max_sessions: int | None = None
    max_files_per_session: int | None = None

    @classmethod
    def named(cls, name: str) -> Limits:
        if name == "unlimited":
            return cls()
        if name == "6.19":
            # A 16-page array of 88-byte session entries and a 2-page array of 64-byte
            # file entries per session, as Linux 6.19 allocates them.
            return cls(max_sessions=(16 * 4096 - 8) // 88, max_files_per_session=128)
        raise ValueError(f"unknown limits {name!r}: use 'unlimited' or '6.19'")
