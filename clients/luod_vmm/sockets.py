"""Where the daemon's socket is: `--socket`, else the default rule of CLI.md.

The same three-line rule as `luod.daemon.listener.default_socket_path` and
`luoctl.sockets`; it lives here too because clients depend on `luod.ipc` only, never on
the daemon package or on each other. Keep the copies in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from luod_vmm.errors import ExitCode, VmmError

__all__ = ["ROOT_SOCKET", "resolve_socket"]

ROOT_SOCKET: Final = "/run/luod/luod.sock"


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
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    if environ.get("LUOD_SOCKET"):
        return environ["LUOD_SOCKET"]
    if euid == 0:
        return ROOT_SOCKET
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], "luod", "luod.sock")
    raise VmmError(
        "no socket path: pass --socket, or set LUOD_SOCKET or XDG_RUNTIME_DIR",
        ExitCode.USAGE,
    )
