"""The rolling-update playbook against a fleet of five local luod daemons.

One host boots 6.19.0, which cannot hand its state to 7.3.0: the pre-flight refuses the
whole rollout and no host changes. With that host left out (`--limit`), the other four are
updated one at a time, in inventory order (the run records' update times say so), each
carrying a memfd (staged with luoctl here, with luod_session in test_failures; retrieved
and compared with luod_session). Check mode changes nothing, a second run
changes nothing, and rollback.yml takes two hosts back to 7.2.0, which the matrix allows,
and leaves the cold-booted one alone.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from .conftest import HERE, PLAYBOOKS, Fleet, Host

TARGET = "7.3.0"
ROLLOUT = PLAYBOOKS / "rolling-update.yml"


def session_files(host: Host) -> list[tuple[str, str, int]]:
    return [
        (s["name"], s["direction"], f["token"])
        for s in host.status()["sessions"]
        for f in s["files"]
    ]


def started_at(record: dict[str, Any]) -> float:
    """When the update began: its end less its phases (an upper bound on the start)."""
    update = record["last_update"]
    phases_ms: float = sum(update["phases"].values())
    finished: float = update["finished_at"]
    return finished - phases_ms / 1000


def test_preflight_refuses_then_the_rollout_goes_host_by_host(fleet: Fleet) -> None:
    good = [fleet.add(f"host{i}", "7.2.0") for i in range(1, 5)]
    old = fleet.add("old", "6.19.0")
    for host in fleet.hosts:  # luod_session stages the same in test_failures, via Ansible
        host.stage()

    refused = fleet.playbook(ROLLOUT, luod_target=TARGET)
    assert refused.rc != 0
    checks = refused.results("Check that the host can go to the target")
    assert checks["old"]["failed"] is True
    message = checks["old"]["msg"]
    assert "old" in message and TARGET in message and "6.19.0" in message
    assert "target refused" in message and "kho" in message
    assert [p["format"] for p in checks["old"]["problems"]] == ["kho", "memfd"]
    assert all(checks[h.name]["compatible"] is True for h in good)
    assert refused.results("Live-update the host to the target") == {}
    for host in fleet.hosts:
        status = host.status()
        assert (status["state"], status["last_update"]) == ("normal", None)
        assert session_files(host) == [("vm1", "outgoing", 1)]

    dry = fleet.playbook(ROLLOUT, "--limit", "host1", "--check", "--diff", luod_target=TARGET)
    assert dry.rc == 0, dry.doc
    would = dry.results("Live-update the host to the target")["host1"]
    assert would["changed"] is True and would["problems"] == []
    assert would["diff"] == {"before": {"release": "7.2.0"}, "after": {"release": TARGET}}
    assert good[0].status()["last_update"] is None

    rollout = fleet.playbook(ROLLOUT, "--limit", "!old", luod_target=TARGET)
    assert rollout.rc == 0, rollout.doc
    updates = rollout.results("Live-update the host to the target")
    assert sorted(updates) == [h.name for h in good]
    for host in good:
        result = updates[host.name]
        assert result["changed"] is True and result["damage"] == []
        assert (result["from"], result["to"]) == ("7.2.0", TARGET)
        assert result["diff"] == {"before": {"release": "7.2.0"}, "after": {"release": TARGET}}
        assert set(result["phases"]) == {"load", "check", "prepare", "freeze", "kexec", "restore"}
        assert result["blackout_ms"] > 0
    records = [h.run_record() for h in good]
    assert all(r["last_update"]["to"] == TARGET for r in records)
    for before, after in itertools.pairwise(records):
        assert before["last_update"]["finished_at"] < started_at(after)
    assert old.status()["kernel"]["release"] == "6.19.0"
    assert old.status()["last_update"] is None

    again = fleet.playbook(ROLLOUT, "--limit", "host1", luod_target=TARGET)
    assert again.rc == 0, again.doc
    assert again.stats["host1"]["changed"] == 0
    assert good[0].run_record()["last_update"] == records[0]["last_update"]

    verified = fleet.playbook(HERE / "verify.yml", "--limit", "!old")
    assert verified.rc == 0, verified.doc
    digests = verified.results("Retrieve the payload from session vm1")
    for host in good:
        assert digests[host.name]["sha256"] == hashlib.sha256(host.payload.read_bytes()).hexdigest()
        assert digests[host.name]["seals"] == ["grow"]
        status = host.status()
        assert (status["kernel"]["release"], status["kernel"]["liveupdate_number"]) == (TARGET, 1)
        assert status["sessions"] == []

    back = fleet.playbook(PLAYBOOKS / "rollback.yml", "--limit", "host1,host2,old")
    assert back.rc == 0, back.doc
    rolled = back.results("Live-update back to the previous release")
    for host in good[:2]:
        assert (rolled[host.name]["from"], rolled[host.name]["to"]) == (TARGET, "7.2.0")
        assert host.status()["kernel"]["release"] == "7.2.0"
    assert rolled["old"]["skipped"] is True
    reported = back.results("Report hosts that cannot roll back")
    assert "no previous release" in reported["old"]["msg"]
    assert all(reported[h.name]["skipped"] for h in good[:2])
