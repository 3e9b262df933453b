"""The admin rule (`luod.daemon.access`): root, luod's own uid, the admin group's members by
process gid, primary group or supplementary membership; everyone else is refused by name."""

from __future__ import annotations

import grp
import types

import pytest

from luod.daemon import access
from luod.daemon.access import AdminGroup, AdminPolicy, resolve_group

NOGROUP = AdminGroup("nogroup", 65534)


def test_root_and_luods_uid_are_admins_without_a_group() -> None:
    policy = AdminPolicy(daemon_uid=1000)
    assert policy.resolve(0).admin and policy.resolve(0).reason == "uid 0 is root"
    assert policy.resolve(1000).admin and "luod's own" in policy.resolve(1000).reason
    plain = policy.resolve(1001, 1001)
    assert not plain.admin
    assert plain.reason == "uid 1001 is not root or uid 1000 (luod)"
    refusal = policy.refusal("kexec", plain)
    assert refusal.name == "luod.NotPermitted" and refusal.errno_name == "EPERM"
    assert refusal.obj == "kexec"
    assert refusal.message == "kexec needs root or uid 1000 (luod); uid 1001 is none of them"


def test_group_membership_by_process_gid_primary_or_supplementary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = AdminPolicy(daemon_uid=0, group=NOGROUP)
    assert "process gid" in policy.resolve(4242, 65534).reason  # no passwd entry needed
    assert "primary group" in policy.resolve(65534, 0).reason  # nobody's passwd gid
    assert not policy.resolve(4242, 4242).admin  # neither, and no passwd entry
    members = types.SimpleNamespace(gr_mem=["root", "nobody"])
    monkeypatch.setattr(access, "grp", types.SimpleNamespace(getgrgid=lambda gid: members))
    other = AdminPolicy(daemon_uid=1000, group=AdminGroup("luodadm", 4321))
    assert other.resolve(65534, 0).reason == "uid 65534 is in group luodadm (supplementary member)"
    members.gr_mem = ["root"]
    refused = other.resolve(65534, 0)
    assert not refused.admin
    assert other.refusal("update", refused).message == (
        "update needs root, uid 1000 (luod) or group luodadm; uid 65534 is none of them"
    )


def test_admin_group_by_name_or_gid() -> None:
    assert resolve_group("nogroup") == NOGROUP
    assert resolve_group(str(grp.getgrnam("nogroup").gr_gid)) == NOGROUP
    with pytest.raises(ValueError, match="no group 'no-such-group'"):
        resolve_group("no-such-group")


def test_an_unknown_admin_group_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from luod.daemon.main import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--admin-group", "no-such-group"])
    assert exit_.value.code == 2
    assert "no group 'no-such-group'" in capsys.readouterr().err
