"""The luod service: trio listener, connections, orchestration, systemd glue and logging.

This is the only layer that runs an event loop. It owns the one emulated machine and kernel
and serialises every access to them; `kernel_model` and `hw` below it stay synchronous and
import no trio. Submodules are imported explicitly (`luod.daemon.main`, ...); this package
root imports nothing so that importing a sibling does not start trio or structlog.
"""

from __future__ import annotations
