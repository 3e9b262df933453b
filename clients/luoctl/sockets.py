"""Where the daemon's socket is: `--socket`, else the default rule of CLI.md.

The rule itself is `luod.ipc.sockets.default_socket_path`, the one the daemon and luod-vmm
use too (it is stdlib only, so luoctl's start-up stays cheap); this module adds `--socket`
and turns "no rule applies" into luoctl's usage error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from luoctl.failures import UsageError
from luod.ipc.sockets import ROOT_SOCKET as SHARED_ROOT_SOCKET
from luod.ipc.sockets import default_socket_path as socket_rule

__all__ = ["ROOT_SOCKET", "default_socket_path", "resolve_socket"]

ROOT_SOCKET: Final = SHARED_ROOT_SOCKET
"""The system daemon's socket, the default for root."""


def default_socket_path(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """`$LUOD_SOCKET` (when non-empty), else `/run/luod/luod.sock` for root, else
    `$XDG_RUNTIME_DIR/luod/luod.sock`. `environ` and `euid` default to this process's.

    Raises:
        UsageError: none applies (not root, and neither variable is set). It is a usage
            error rather than "unreachable": retrying will not help, `--socket` will.
    """
    path = socket_rule(environ, euid)
    if path is not None:
        return path
    raise UsageError(
        "no socket path: pass --socket, or set LUOD_SOCKET or XDG_RUNTIME_DIR "
        "(neither is set and luoctl is not running as root)"
    )


def resolve_socket(option: str | None) -> str:
    """The socket to connect to: the `--socket` value when given, else the default."""
    return option if option else default_socket_path()
