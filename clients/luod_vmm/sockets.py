"""Where the daemon's socket is: `--socket`, else the default rule of CLI.md.

The rule itself is `luod.ipc.sockets.default_socket_path`, shared with the daemon and
luoctl; this module adds `--socket` and luod-vmm's own error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from luod.cli.exitcodes import ExitCode
from luod.ipc.sockets import ROOT_SOCKET as SHARED_ROOT_SOCKET
from luod.ipc.sockets import default_socket_path as socket_rule
from luod_vmm.errors import VmmError

__all__ = ["ROOT_SOCKET", "resolve_socket"]

ROOT_SOCKET: Final = SHARED_ROOT_SOCKET


def resolve_socket(
    option: str | None, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> str:
    """`--socket` when given, else `$LUOD_SOCKET` (when non-empty), else
    `/run/luod/luod.sock` for root, else `$XDG_RUNTIME_DIR/luod/luod.sock`.

    Raises:
        VmmError: (usage) none applies.
    """
    if option:
        return option
    path = socket_rule(environ, euid)
    if path is not None:
        return path
    raise VmmError(
        "no socket path: pass --socket, or set LUOD_SOCKET or XDG_RUNTIME_DIR",
        ExitCode.USAGE,
    )
