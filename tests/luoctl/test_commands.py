"""Each command against the fake daemon: the params it sends (checked against the method
contract by the fake), the JSON document it prints, its human output and exit code."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Luoctl
from .fake_daemon import Answer, FakeDaemon

SESSION_VM1: dict[str, Any] = {
    "name": "vm1",
    "direction": "outgoing",
    "files": [
        {"token": 1, "type": "memfd", "format": None},
        {"token": 2, "type": "iommufd", "format": None},
    ],
}

STATUS: dict[str, Any] = {
    "state": "normal",
    "kernel": {"release": "6.19.0", "liveupdate_number": 0, "boot": "cold"},
    "loaded": None,
    "sessions": [SESSION_VM1],
    "participants": [{"name": "vmm", "sessions": ["vm1"], "state": "ready"}],
    "blocking": [],
    "last_update": None,
    "machine": {"ram": 64 << 30, "resident": 3 << 20},
    "extra": "passed through",
}


def test_status(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["status"] = Answer(result=STATUS)
    run = luoctl("status", json=True)
    assert run.code == 0 and run.err == ""
    assert run.json() == STATUS
    assert daemon.methods() == ["status"] and daemon.clients == ["luoctl"]

    human = luoctl("status")
    assert human.code == 0 and human.err == ""
    assert "state:" in human.out and "normal" in human.out
    assert "6.19.0 (liveupdate number 0)" in human.out
    assert "ram 64G, resident 3M" in human.out
    assert "vm1" in human.out and "1:memfd,2:iommufd" in human.out
    assert "PARTICIPANT" in human.out and "ready" in human.out


def test_status_survives_a_sparse_result(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["status"] = Answer(result={"state": "frozen"})
    run = luoctl("status")
    assert run.code == 0 and "frozen" in run.out and "no sessions" in run.out


def test_kernel_list_is_a_list(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    images = [
        {"release": "6.19.0", "summary": "old", "reads": ["memfd-v1"], "profiles": {}},
        {"release": "7.0.0", "summary": "new", "reads": ["memfd-v2"], "profiles": {}},
    ]
    daemon.answers["kernel.list"] = Answer(result={"images": images})
    run = luoctl("kernel", "list", json=True)
    assert run.code == 0 and run.json() == images
    human = luoctl("kernel", "list").out.splitlines()
    assert human[0].split() == ["RELEASE", "SUMMARY"]
    assert [line.split()[0] for line in human[1:]] == ["6.19.0", "7.0.0"]


def test_kernel_show_and_write(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    image = {"release": "7.0.0", "summary": "s", "reads": ["a", "b"], "write": {"a": True}}
    daemon.answers["kernel.show"] = Answer(result=image)
    assert luoctl("kernel", "show", "7.0.0", json=True).json() == image
    assert "reads:   a,b" in luoctl("kernel", "show", "7.0.0").out
    assert daemon.requests[-1].params == {"target": "7.0.0"}

    daemon.answers["kernel.write"] = Answer(result={"format": "memfd-v2", "enabled": False})
    run = luoctl("kernel", "write", "memfd-v2", "off")
    assert run.out == "memfd-v2: write off\n"
    assert daemon.requests[-1].params == {"format": "memfd-v2", "enabled": False}
    luoctl("kernel", "write", "memfd-v2", "on")
    assert daemon.requests[-1].params == {"format": "memfd-v2", "enabled": True}


def _cell(fmt: str | None, *, writes: bool = True, reason: str | None = None) -> dict[str, Any]:
    return {"format": fmt, "formats": [fmt] if fmt else [], "writes": writes, "reason": reason}


MATRIX: dict[str, Any] = {
    "releases": ["6.19.0", "7.3.0"],
    "types": ["kho", "luo", "memfd", "iommufd"],
    "pairs": [
        {
            "from": a,
            "to": b,
            "compatible": a == b,
            "refused": [] if a == b else ["kho"],
            "types": {
                "kho": _cell(f"kho-v{1 if a < '7' else 2}")
                if a == b
                else _cell(None, reason="kho: no"),
                "luo": _cell("luo-v1"),
                "memfd": _cell("memfd-v3" if a == b == "7.3.0" else "memfd-v1"),
                "iommufd": _cell(None, writes=False, reason="writes none")
                if a < "7"
                else _cell("iommufd-v1"),
            },
        }
        for a in ("6.19.0", "7.3.0")
        for b in ("6.19.0", "7.3.0")
    ],
}


def test_kernel_matrix(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["kernel.matrix"] = Answer(result=MATRIX)
    assert luoctl("kernel", "matrix", json=True).json() == MATRIX
    assert daemon.requests[-1].params == {"targets": []}
    run = luoctl("kernel", "matrix", "old.toml")
    assert daemon.requests[-1].params == {"targets": ["old.toml"]}
    assert run.code == 0 and run.err == ""
    lines = run.out.splitlines()
    assert lines[2].split() == ["FROM", "\\", "TO", "6.19.0", "7.3.0"]
    assert lines[3].split() == ["6.19.0", "yes", "no"]
    assert lines[4].split() == ["7.3.0", "no", "yes"]
    rows = [line.split() for line in lines[7:]]
    assert rows[0][:7] == ["6.19.0", "6.19.0", "yes", "v1", "v1", "v1", "-"]
    assert rows[1][:7] == ["6.19.0", "7.3.0", "no", "NO", "v1", "v1", "-"]
    assert rows[1][7:] == ["kho:", "no"]
    assert rows[3][:7] == ["7.3.0", "7.3.0", "yes", "v2", "v1", "v3", "v1"]


def test_session_commands(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["session.create"] = Answer(result={**SESSION_VM1, "files": []})
    run = luoctl("session", "create", "vm1", json=True)
    assert run.json() == {"name": "vm1", "direction": "outgoing", "files": []}
    assert daemon.requests[-1].params == {"name": "vm1"}

    daemon.answers["session.list"] = Answer(result={"sessions": [SESSION_VM1]})
    assert luoctl("session", "list", json=True).json() == [SESSION_VM1]
    assert "1:memfd,2:iommufd" in luoctl("session", "list").out

    daemon.answers["session.show"] = Answer(result=SESSION_VM1)
    assert luoctl("session", "show", "vm1", json=True).json() == SESSION_VM1
    assert daemon.requests[-1].params == {"name": "vm1"}
    human = luoctl("session", "show", "vm1", "--direction", "incoming").out.splitlines()
    assert daemon.requests[-1].params == {"name": "vm1", "direction": "incoming"}
    assert human[0] == "session vm1 (outgoing)"
    assert human[1].split() == ["TOKEN", "TYPE", "FORMAT"]
    assert human[2].split() == ["1", "memfd", "-"]

    assert luoctl("session", "close", "vm1", json=True).json() == {"name": "vm1"}
    assert luoctl("session", "close", "vm1").out == "closed session vm1\n"
    assert luoctl("session", "finish", "vm1").out == "finished session vm1\n"
    daemon.answers["session.retrieve"] = Answer(result={**SESSION_VM1, "direction": "incoming"})
    assert luoctl("session", "retrieve", "vm1", json=True).json()["direction"] == "incoming"
    assert [s.method for s in daemon.requests[-4:]] == [
        "session.close",
        "session.close",
        "session.finish",
        "session.retrieve",
    ]


def test_file_commands(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    run = luoctl("file", "unpreserve", "vm1", "--token", "0x10", json=True)
    assert run.json() == {"session": "vm1", "token": 16}
    assert daemon.requests[-1].params == {"session": "vm1", "token": 16}
    daemon.answers["file.retrieve"] = Answer(result={"token": 3, "type": "iommufd", "format": "x"})
    run = luoctl("file", "retrieve", "vm1", "-t", "3", json=True)
    assert run.json() == {"session": "vm1", "token": 3, "type": "iommufd", "format": "x"}
    human = luoctl("file", "retrieve", "vm1", "-t", "3").out
    assert human == "retrieved token 3 of session vm1: iommufd (x)\n"


def test_big_token_travels_as_u64(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    run = luoctl("file", "unpreserve", "s", "--token", "0xffffffffffffffff")
    assert run.code == 0
    assert daemon.requests[-1].params["token"] == 2**64 - 1


PROBLEMS = [
    {"format": "memfd-v2", "reason": "not readable", "session": "vm1", "token": 1, "type": "memfd"},
    {"format": "kho-v2", "reason": "unknown root", "session": None, "token": None},
]


def test_check_compatible(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    result = {"compatible": True, "target": "7.0.0", "problems": [], "objects": []}
    daemon.answers["check"] = Answer(result=result)
    run = luoctl("check", "--to", "7.0.0", json=True)
    assert run.code == 0 and run.json() == result
    assert daemon.requests[-1].params == {"target": "7.0.0"}
    assert luoctl("check", "--to", "7.0.0").out == "7.0.0: compatible\n"


def test_check_incompatible_exits_3(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["check"] = Answer(
        result={"compatible": False, "target": "6.19.0", "problems": PROBLEMS, "objects": []}
    )
    run = luoctl("check", "--to", "6.19.0", json=True)
    assert run.code == 3 and run.err == ""
    assert run.json()["problems"] == PROBLEMS
    human = luoctl("check", "--to", "6.19.0")
    assert human.code == 3 and human.err == ""
    lines = human.out.splitlines()
    assert lines[0] == "6.19.0: incompatible"
    assert lines[1].split() == ["SESSION", "TOKEN", "FORMAT", "REASON"]
    assert lines[2].split() == ["vm1", "1", "memfd-v2", "not", "readable"]
    assert lines[3].split()[:3] == ["(machine)", "-", "kho-v2"]


def test_check_fills_in_the_target(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["check"] = Answer(result={"compatible": True, "problems": []})
    assert luoctl("check", "--to", "7.0.0", json=True).json()["target"] == "7.0.0"


def test_load(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["load"] = Answer(result={"loaded": "7.0.0", "compatible": True, "problems": []})
    run = luoctl("load", "7.0.0")
    assert run.code == 0 and run.out == "loaded 7.0.0\n"
    assert daemon.requests[-1].params == {"target": "7.0.0", "force": False}
    luoctl("load", "/tmp/image.toml", "--force")
    assert daemon.requests[-1].params == {"target": "/tmp/image.toml", "force": True}


@pytest.mark.parametrize("event", ["prepare", "freeze", "cancel", "finish"])
def test_global_events(daemon: FakeDaemon, luoctl: Luoctl, event: str) -> None:
    daemon.answers[event] = Answer(result={"state": "prepared", "target": "7.0.0"})
    run = luoctl(event, json=True)
    assert run.code == 0 and run.json() == {"state": "prepared", "target": "7.0.0"}
    assert daemon.requests[-1].method == event and daemon.requests[-1].params == {}
    assert luoctl(event).out.splitlines()[0].split() == ["state:", "prepared"]


UPDATE = {
    "from": "6.19.0",
    "to": "7.0.0",
    "phases": {"restore": 4.0, "load": 1.25, "check": 0.5, "prepare": 3, "freeze": 2, "kexec": 9},
    "blackout_ms": 15.5,
    "update_id": 7,
}


def test_update(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["update"] = Answer(result=UPDATE, delay=0.3)
    # The reply takes longer than --timeout: update waits for the daemon's deadlines.
    run = luoctl("update", "--to", "7.0.0", json=True, timeout=0.1)
    assert run.code == 0 and run.json() == UPDATE and run.err == ""
    assert daemon.requests[-1].params == {"target": "7.0.0", "timeout": None, "force": False}
    assert daemon.methods() == ["update"]  # no progress subscription: not a terminal

    human = luoctl("update", "--to", "7.0.0", "--timeout", "12.5", "--force")
    assert daemon.requests[-1].params == {"target": "7.0.0", "timeout": 12.5, "force": True}
    assert human.out.splitlines() == [
        "6.19.0 -> 7.0.0: blackout 15.5 ms",
        "phases: load 1.2 ms, check 0.5 ms, prepare 3.0 ms, freeze 2.0 ms, kexec 9.0 ms, "
        "restore 4.0 ms",
    ]
    assert human.err == ""


def test_kexec(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["kexec"] = Answer(result=UPDATE, delay=0.3)
    assert luoctl("kexec", json=True, timeout=0.1).json() == UPDATE
    assert daemon.requests[-1].params == {"target": None, "force": False}
    luoctl("kexec", "--to", "7.0.0", "--force")
    assert daemon.requests[-1].params == {"target": "7.0.0", "force": True}


def test_boot_cold(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    daemon.answers["boot.cold"] = Answer(result={"release": "6.19.0"})
    run = luoctl("boot", "--cold")
    assert run.code == 0 and run.out == "cold boot: running 6.19.0\n"
    assert daemon.requests[-1].params == {"target": None}
    assert luoctl("boot", "--cold", "--kernel", "7.0.0", json=True).json() == {"release": "6.19.0"}
    assert daemon.requests[-1].params == {"target": "7.0.0"}


def test_update_with_damage(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    error = {"name": "luod.InjectedFault", "errno": "EIO", "message": "injected fault at x"}
    damage = [{"session": "vm1", "token": None, "step": "boot", "error": error}]
    daemon.answers["update"] = Answer(result={**UPDATE, "damage": damage})
    lines = luoctl("update", "--to", "7.0.0").out.splitlines()
    assert lines[2] == "damage: 1 (not restored; everything else goes on)"
    assert lines[3].split() == ["SESSION", "TOKEN", "STEP", "ERROR"]
    assert lines[4].split()[:3] == ["vm1", "-", "boot"] and "injected fault at x" in lines[4]


def test_fault_commands(daemon: FakeDaemon, luoctl: Luoctl) -> None:
    arm = {"point": "handler.retrieve", "count": None, "errno": "EBUSY", "match": "vm1/1"}
    daemon.answers["fault.arm"] = Answer(result=arm)
    run = luoctl(
        "fault", "arm", "handler.retrieve", "--always", "--errno", "EBUSY", "--match", "vm1/1"
    )
    assert run.code == 0 and run.out == "armed handler.retrieve: always EBUSY on vm1/1\n"
    assert daemon.requests[-1].params == arm
    luoctl("fault", "arm", "handler.prepare", "--count", "2")
    assert daemon.requests[-1].params == {
        "point": "handler.prepare",
        "count": 2,
        "errno": "EIO",
        "match": None,
    }
    assert luoctl("fault", "arm", "handler.prepare", "--count", "0").code == 2

    points = [
        {"point": "handler.prepare", "after_kexec": False, "description": "d1", "armed": []},
        {"point": "handler.retrieve", "after_kexec": True, "description": "d2", "armed": [arm]},
    ]
    listing = {"enabled": True, "points": points, "armed": [arm], "fired": []}
    daemon.answers["fault.list"] = Answer(result=listing)
    assert luoctl("fault", "list", json=True).json() == listing
    lines = luoctl("fault", "list").out.splitlines()
    assert lines[0].split() == ["POINT", "WHEN", "ARMED", "DESCRIPTION"]
    assert lines[1].split() == ["handler.prepare", "before", "kexec", "-", "d1"]
    assert lines[2].split()[:3] == ["handler.retrieve", "after", "kexec"]
    assert "always EBUSY on vm1/1" in lines[2]

    daemon.answers["fault.clear"] = Answer(result={"cleared": 1})
    assert luoctl("fault", "clear").out == "cleared every point (1 arm(s))\n"
    assert daemon.requests[-1].params == {"point": None}
    assert luoctl("fault", "clear", "handler.retrieve", json=True).json() == {
        "point": "handler.retrieve",
        "cleared": 1,
    }


def test_socket_from_environment(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from luoctl.main import main

    monkeypatch.setenv("LUOD_SOCKET", str(daemon.path))
    daemon.answers["status"] = Answer(result={"state": "normal"})
    assert main(["--json", "status"]) == 0
    assert capsys.readouterr().out.strip() == '{"state": "normal"}'
