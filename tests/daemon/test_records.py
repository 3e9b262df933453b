"""Run records: durable phase notes, the crash report, and a corrupt state dir moved aside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from luod.daemon.records import RUN_FILE, RunRecords

SESSIONS = [
    {"name": "vm1", "direction": "outgoing", "owner": 0, "files": [{"token": 1, "type": "memfd"}]},
    {"name": "vm2", "direction": "outgoing", "owner": 0, "files": []},
]


def crash_during(state: Path, phase: str) -> None:
    """A run that dies (no stop) while `phase` is running."""
    run = RunRecords(state)
    run.start()
    run.phase(phase, update_id=3, start_release="7.1.0", target="7.2.0", sessions=SESSIONS)


@pytest.mark.parametrize("phase", ["load", "check", "prepare", "freeze", "kexec"])
def test_a_crash_mid_update_is_reported_with_the_phase_and_every_lost_session(
    tmp_path: Path, phase: str
) -> None:
    crash_during(tmp_path, phase)
    after = RunRecords(tmp_path)
    after.start()
    assert after.previous_unclean
    report = after.last_update
    assert report is not None
    assert report["crashed"] is True and report["died_in"] == phase
    assert (report["update_id"], report["from"], report["to"]) == (3, "7.1.0", "7.2.0")
    assert [s["name"] for s in report["lost"]] == ["vm1", "vm2"]
    assert report["lost"][0]["files"] == [{"token": 1, "type": "memfd"}]
    assert {d["session"] for d in report["damage"]} == {"vm1", "vm2"}
    assert phase in report["damage"][0]["error"]["message"]
    assert report["boot"]["kind"] == "cold"


def test_a_settled_update_leaves_nothing_in_flight(tmp_path: Path) -> None:
    run = RunRecords(tmp_path)
    run.start()
    run.phase("prepare", update_id=1, start_release="a", target="b", sessions=SESSIONS)
    run.settled()  # cancelled
    after = RunRecords(tmp_path)
    after.start()  # crashed after the cancel: unclean, but no update was lost
    assert after.previous_unclean and after.last_update is None


def test_every_write_is_a_complete_record_on_disk(tmp_path: Path) -> None:
    run = RunRecords(tmp_path)
    run.start()
    run.phase("freeze", update_id=1, start_release="a", target="b", sessions=SESSIONS)
    on_disk = json.loads((tmp_path / RUN_FILE).read_text())
    assert on_disk["in_flight"]["phase"] == "freeze" and on_disk["clean"] is False
    assert not list(tmp_path.glob("*.tmp"))
    run.stop()
    assert json.loads((tmp_path / RUN_FILE).read_text())["clean"] is True


def test_a_clean_stop_after_a_crash_report_keeps_the_report(tmp_path: Path) -> None:
    crash_during(tmp_path, "kexec")
    second = RunRecords(tmp_path)
    second.start()
    second.stop()
    third = RunRecords(tmp_path)
    third.start()
    assert not third.previous_unclean
    assert third.last_update is not None and third.last_update["died_in"] == "kexec"


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_text("{not json"), "not JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "not JSON"),
        (lambda p: p.write_text("[1, 2]"), "not an object"),
        (lambda p: p.write_text('{"clean": "yes"}'), "'clean'"),
        (lambda p: p.write_text('{"clean": false, "in_flight": {"phase": 3}}'), "in_flight"),
        (os.mkfifo, "not a regular file"),
        (lambda p: p.symlink_to(p.parent / "elsewhere"), "cannot open"),
    ],
    ids=["directory", "bad-json", "bad-utf8", "array", "schema", "in-flight", "fifo", "symlink"],
)
def test_a_corrupt_record_is_moved_aside_and_counts_as_unclean(
    tmp_path: Path, damage: object, why: str
) -> None:
    damage(tmp_path / RUN_FILE)  # type: ignore[operator]
    run = RunRecords(tmp_path)
    run.start()
    assert run.previous_unclean and run.last_update is None
    [moved] = run.status()["state_moved_aside"]
    aside = Path(moved["moved_to"])
    assert aside.name.startswith(f"{RUN_FILE}.corrupt-")
    assert aside.exists() or aside.is_symlink()
    assert why in moved["error"] and moved["file"] == str(tmp_path / RUN_FILE)
    assert json.loads((tmp_path / RUN_FILE).read_text())["clean"] is False  # ours, fresh


def test_a_state_dir_that_is_a_file_is_moved_aside(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("oops")
    run = RunRecords(state)
    run.start()
    assert state.is_dir() and run.previous_unclean
    [moved] = run.moved_aside
    assert Path(moved["moved_to"]).read_text() == "oops"
