"""luod_session's action plugin: HostAction (names the host in failures)."""

from __future__ import annotations

from ansible_collections.luod.liveupdate.plugins.plugin_utils.host_action import (
    HostAction as ActionModule,
)

__all__ = ["ActionModule"]
