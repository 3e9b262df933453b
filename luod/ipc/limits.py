"""The protocol's numeric limits and version, with no imports.

Owns the constants both the full protocol stack (`messages`, `framing`, which re-export
them) and `luod.ipc.oneshot` need: a module of its own so that the short path of luoctl's
start imports them without attrs or the rest of the stack.
"""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = 1
"""The protocol version this package speaks by default."""

SUPPORTED_VERSIONS: Final = frozenset({PROTOCOL_VERSION})
"""Versions a server built on this package accepts in `hello`."""

MAX_ID: Final = (1 << 32) - 1
"""Request ids are u32: 0..MAX_ID."""

MAX_FDS_PER_MESSAGE: Final = 253
"""Linux's SCM_MAX_FD: the most fds one sendmsg can carry, hence one message."""

DEFAULT_MAX_FRAME: Final = 1 << 20
"""Default cap on a frame's body (1 MiB); bulk data travels by fd passing, not in frames."""

HEADER_SIZE: Final = 4
"""The u32 big-endian length prefix of every frame."""

DEFAULT_TIMEOUT: Final = 30.0
"""Default seconds a client waits for the daemon (connect, hello, each call)."""
