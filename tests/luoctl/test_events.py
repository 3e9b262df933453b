"""`events` prints JSON lines; `update` shows phase events live on a terminal only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Luoctl
from .fake_daemon import Answer, FakeDaemon


def lines(text: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


class TestEvents:
    def test_recent_replay_then_exit(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        recent = [
            {"event": "session.created", "ts": 1.5, "data": {"name": "vm1"}},  # wire shape
            {"event": "prepare", "ts": 2.5, "state": "prepared"},  # already flat
        ]
        daemon.answers["events.subscribe"] = Answer(
            result={"subscribed": True, "recent": recent},
            events_before=[("freeze", {"state": "frozen"})],
        )
        for json_flag in (False, True):
            run = luoctl("events", json=json_flag)
            assert run.code == 0 and run.err == ""
            printed = lines(run.out)
            assert printed[:2] == [
                {"event": "session.created", "ts": 1.5, "name": "vm1"},
                {"event": "prepare", "ts": 2.5, "state": "prepared"},
            ]
            # An event that arrived while subscribing is printed too, after the replay.
            assert printed[2]["event"] == "freeze" and printed[2]["state"] == "frozen"
            assert isinstance(printed[2]["ts"], float) and len(printed) == 3

    def test_nothing_to_replay(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        daemon.answers["events.subscribe"] = Answer(result={"subscribed": True})
        run = luoctl("events")
        assert (run.code, run.out, run.err) == (0, "", "")

    def test_follow(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        # The fake hangs up after three events: the stream ends with a one-line error.
        daemon.answers["events.subscribe"] = Answer(
            result={"subscribed": True, "recent": [{"event": "old", "ts": 0.0, "data": {}}]},
            events_after=[("tick", {"n": n, "event": "spoofed"}) for n in range(3)],
            close_after=True,
        )
        run = luoctl("events", "--follow")
        printed = lines(run.out)
        assert printed[0]["event"] == "subscribed"
        assert printed[0]["subscribed"] is True and printed[0]["socket"] == str(daemon.path)
        assert "recent" not in printed[0]  # history is for the one-shot form
        assert [(p["event"], p["n"]) for p in printed[1:]] == [
            ("tick", 0),
            ("tick", 1),
            ("tick", 2),
        ]
        assert run.code == 1
        assert run.err.count("\n") == 1 and run.err.startswith("luoctl: ")
        assert "(ECONNRESET)" in run.err


UPDATE = {"from": "6.19.0", "to": "7.0.0", "phases": {"load": 1}, "blackout_ms": 2}
PHASES = [("update.phase", {"phase": p, "update_id": 1}) for p in ("load", "check", "prepare")]


class TestUpdateProgress:
    def test_on_a_terminal(
        self, daemon: FakeDaemon, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        monkeypatch.setattr("luoctl.progress.stdout_is_terminal", lambda: True)
        daemon.answers["update"] = Answer(result=UPDATE, events_before=PHASES)
        run = luoctl("update", "--to", "7.0.0")
        assert run.code == 0
        assert daemon.methods() == ["events.subscribe", "update"]  # one connection
        assert daemon.clients == ["luoctl"]
        progress = run.err.splitlines()
        assert len(progress) == 3
        assert all(line.startswith("luoctl: [") for line in progress)
        assert [line.split("] ")[1] for line in progress] == [
            "update.phase phase=load update_id=1",
            "update.phase phase=check update_id=1",
            "update.phase phase=prepare update_id=1",
        ]
        assert run.out.startswith("6.19.0 -> 7.0.0: blackout 2.0 ms\n")

    def test_names_who_the_update_waits_for(
        self, daemon: FakeDaemon, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        monkeypatch.setattr("luoctl.progress.stdout_is_terminal", lambda: True)
        waiting = {"update_id": 1, "phase": "freeze", "participants": ["vmm1", "vmm2"]}
        daemon.answers["update"] = Answer(
            result=UPDATE, events_before=[("update.waiting", waiting)]
        )
        run = luoctl("update", "--to", "7.0.0")
        assert run.code == 0
        assert run.err.splitlines()[0].split("] ")[1] == (
            "update.waiting update_id=1 phase=freeze participants=vmm1,vmm2"
        )

    def test_not_when_stdout_is_not_a_terminal(
        self, daemon: FakeDaemon, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        daemon.answers["update"] = Answer(result=UPDATE, events_before=PHASES)
        run = luoctl("update", "--to", "7.0.0")
        assert run.code == 0 and run.err == ""
        assert daemon.methods() == ["update"]

    def test_not_with_json(
        self, daemon: FakeDaemon, luoctl: Luoctl, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("luoctl.progress.stderr_is_terminal", lambda: True)
        monkeypatch.setattr("luoctl.progress.stdout_is_terminal", lambda: True)
        daemon.answers["update"] = Answer(result=UPDATE, events_before=PHASES)
        run = luoctl("update", "--to", "7.0.0", json=True)
        assert run.code == 0 and run.err == "" and run.json() == UPDATE
        assert daemon.methods() == ["update"]

    def test_not_off_a_terminal(self, daemon: FakeDaemon, luoctl: Luoctl) -> None:
        daemon.answers["kexec"] = Answer(result=UPDATE, events_before=PHASES)
        run = luoctl("kexec")
        assert run.code == 0 and run.err == ""
        assert daemon.methods() == ["kexec"]
