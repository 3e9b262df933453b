"""The method handlers, in groups by concept; `GROUPS` is what the dispatcher joins.

Each module registers its handlers on its own `MethodGroup`; the dispatcher checks at
start-up that together they handle exactly the methods of `luod.ipc.methods.METHODS`.
A handler is `async (connection, params, request) -> (result, fds)`: it runs the
synchronous model without awaiting in between, publishes what changed, and raises
`DaemonError` or `KernelError` to refuse.
"""

from __future__ import annotations

from luod.daemon.api import admin, events, files, machine, sessions, update
from luod.daemon.dispatch import MethodGroup

GROUPS: tuple[MethodGroup, ...] = (
    machine.group,
    sessions.group,
    files.group,
    update.group,
    admin.group,
    events.group,
)

__all__ = ["GROUPS"]
