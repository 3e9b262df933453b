"""Who may drive the machine: CLI.md's "Who may call what", decided once per connection.

Machine-wide methods (`access="admin"` in the method table) are for root, luod's own uid,
or a member of `luod --admin-group GROUP`. `AdminPolicy.resolve` answers that for one peer
(SO_PEERCRED uid and gid) when its hello is accepted; the dispatcher then only reads the
connection's `Access.admin`, an attribute, so no request pays for a group lookup. A
membership change takes effect on the client's next connection, as a login's groups do.

Membership: the peer's gid from SO_PEERCRED, the primary gid of its uid's passwd entry, or
its user name in the group's member list (supplementary). A uid without a passwd entry can
only be a member through its gid.
"""

from __future__ import annotations

import errno
import grp
import pwd

import attrs

from luod.daemon.errors import DaemonError

__all__ = ["Access", "AdminGroup", "AdminPolicy", "resolve_group"]


@attrs.frozen
class AdminGroup:
    """The group whose members may drive the machine."""

    name: str
    gid: int


def resolve_group(text: str) -> AdminGroup:
    """`--admin-group`: a group name, or a gid (decimal).

    Raises:
        ValueError: no such group; the message names it.
    """
    try:
        entry = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
    except KeyError:
        raise ValueError(f"no group {text!r} in the group database") from None
    return AdminGroup(entry.gr_name, entry.gr_gid)


@attrs.frozen
class Access:
    """What one connection may do: `admin` decides machine-wide methods; `reason` says why
    (shown by `status`)."""

    uid: int
    admin: bool
    reason: str

    def as_json(self) -> dict[str, object]:
        return {"uid": self.uid, "admin": self.admin, "reason": self.reason}


NO_ACCESS = Access(uid=-1, admin=False, reason="no hello yet")


@attrs.frozen
class AdminPolicy:
    """luod's own uid and its admin group (None: root and luod's uid only)."""

    daemon_uid: int
    group: AdminGroup | None = None

    def resolve(self, uid: int, gid: int | None = None) -> Access:
        """The access of a peer with SO_PEERCRED `uid` and `gid`."""
        if uid == 0:
            return Access(uid, True, "uid 0 is root")
        if uid == self.daemon_uid:
            return Access(uid, True, f"uid {uid} is luod's own")
        group = self.group
        if group is not None:
            how = _membership(group, uid, gid)
            if how is not None:
                return Access(uid, True, f"uid {uid} is in group {group.name} ({how})")
        return Access(uid, False, f"uid {uid} is not {self._admins()}")

    def refusal(self, method: str, access: Access) -> DaemonError:
        """`luod.NotPermitted` (EPERM) for a non-admin calling admin method `method`."""
        return DaemonError(
            "NotPermitted",
            f"{method} needs {self._admins()}; uid {access.uid} is none of them",
            errno=errno.EPERM,
            obj=method,
        )

    def _admins(self) -> str:
        who = ["root"] if self.daemon_uid == 0 else ["root", f"uid {self.daemon_uid} (luod)"]
        if self.group is not None:
            who.append(f"group {self.group.name}")
        return who[0] if len(who) == 1 else f"{', '.join(who[:-1])} or {who[-1]}"

    def as_json(self) -> dict[str, object]:
        return {
            "daemon_uid": self.daemon_uid,
            "admin_group": None if self.group is None else self.group.name,
        }


def _membership(group: AdminGroup, uid: int, gid: int | None) -> str | None:
    """How `uid` (running with `gid`) belongs to `group`, or None."""
    if gid == group.gid:
        return "its process gid"
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return None
    if user.pw_gid == group.gid:
        return "primary group"
    try:
        members = grp.getgrgid(group.gid).gr_mem
    except KeyError:
        return None
    return "supplementary member" if user.pw_name in members else None
