"""Fault injection from the command line, against real processes: `luod --enable-faults`
and `luoctl fault arm|list|clear`; without the flag every fault request is refused."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import LuodProcess, start_luod


def test_fault_commands_are_refused_without_the_flag(luod: LuodProcess) -> None:
    for args in (["fault", "list"], ["fault", "arm", "handler.prepare"], ["fault", "clear"]):
        result = luod.luoctl(*args)
        assert result.returncode == 1, result
        error = json.loads(result.stdout)["error"]
        assert error["name"] == "luod.FaultsDisabled" and error["errno"] == "EPERM"


def test_an_armed_fault_cancels_an_update_from_the_cli(workdir: Path) -> None:
    luod = start_luod(workdir, "--enable-faults")
    try:
        (workdir / "data").write_bytes(b"precious" * 1000)
        luod.json("session", "create", "vm1")
        luod.json("memfd", "preserve", "vm1", "--token", "1", "--from", str(workdir / "data"))
        armed = luod.json("fault", "arm", "handler.freeze", "--match", "memfd", "--errno", "EBUSY")
        assert armed == {"point": "handler.freeze", "count": 1, "errno": "EBUSY", "match": "memfd"}
        listing = luod.json("fault", "list")
        assert isinstance(listing, dict)
        assert listing["armed"] == [armed]
        result = luod.luoctl("update", "--to", "7.2.0")
        assert result.returncode == 1
        error = json.loads(result.stdout)["error"]
        assert error["name"] == "luod.InjectedFault" and error["errno"] == "EBUSY"
        assert "injected fault at handler.freeze (memfd vm1/0x1)" in error["message"]
        status = luod.json("status")
        assert isinstance(status, dict)
        assert status["state"] == "normal"
        assert status["last_cancel"]["error"] == error | {"object": "memfd vm1/0x1"}
        human = luod.luoctl("fault", "list", json_out=False)
        assert "handler.freeze" in human.stdout and "fired: handler.freeze" in human.stdout
        update = luod.json("update", "--to", "7.2.0")  # spent: the next update goes through
        assert isinstance(update, dict) and update["damage"] == []
        luod.json("session", "retrieve", "vm1")
        out = workdir / "out"
        luod.json("memfd", "retrieve", "vm1", "--token", "1", "--output", str(out))
        assert out.read_bytes() == b"precious" * 1000
        assert luod.json("fault", "clear") == {"point": None, "cleared": 0}
    finally:
        code, err = luod.stop()
        assert code == 0, err
