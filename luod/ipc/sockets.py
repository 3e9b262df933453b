"""Where luod's socket is when `--socket` is not given: the one rule of CLI.md.

`$LUOD_SOCKET` (when non-empty), else `/run/luod/luod.sock` for root, else
`$XDG_RUNTIME_DIR/luod/luod.sock`. The daemon and every client use this function; each
turns "no rule applies" into its own error. Stdlib only: it is on luoctl's start-up path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

ROOT_SOCKET: Final = "/run/luod/luod.sock"


def default_socket_path(
    environ: Mapping[str, str] | None = None, euid: int | None = None
) -> str | None:
    """The default socket path, or None when none applies (not root, neither variable).
    `environ` and `euid` default to this process's; root is judged by the effective uid."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    if environ.get("LUOD_SOCKET"):
        return environ["LUOD_SOCKET"]
    if euid == 0:
        return ROOT_SOCKET
    if environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(environ["XDG_RUNTIME_DIR"], "luod", "luod.sock")
    return None
