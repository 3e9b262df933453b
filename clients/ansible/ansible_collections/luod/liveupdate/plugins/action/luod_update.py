"""luod_update's action plugin: HostAction (the host in messages, controller image files)."""

from __future__ import annotations

from ansible_collections.luod.liveupdate.plugins.plugin_utils.host_action import (
    HostAction as ActionModule,
)

__all__ = ["ActionModule"]
