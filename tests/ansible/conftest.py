"""A fleet for the luod.liveupdate collection: separate local luod daemons, one socket and
state dir per host, in one inventory (`ansible_connection: local`), and the real
`ansible-playbook` from the venv run against it with the collection on its path.

The JSON stdout callback makes each run a document: per play, per task, per host results,
and the stats. Run records (`run.json` in each state dir) say when each host was updated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from luod.ipc.client import Client

from ..e2e.conftest import BIN, LuodProcess, start_luod

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "clients/ansible"
COLLECTION = COLLECTIONS / "ansible_collections/luod/liveupdate"
PLAYBOOKS = COLLECTION / "playbooks"
HERE = Path(__file__).resolve().parent


@attrs.define
class Host:
    name: str
    daemon: LuodProcess
    state_dir: Path
    payload: Path

    def status(self) -> dict[str, Any]:
        doc = self.daemon.json("status")
        assert isinstance(doc, dict)
        return doc

    def stage(self) -> None:
        """What stage.yml does, through luoctl: the payload in session vm1, token 1."""
        self.daemon.luoctl("session", "create", "vm1", check=True)
        args = ["memfd", "preserve", "vm1", "--token", "1", "--from", str(self.payload)]
        self.daemon.luoctl(*args, "--seal", "grow", check=True)

    def run_record(self) -> dict[str, Any]:
        record = json.loads((self.state_dir / "run.json").read_text())
        assert isinstance(record, dict)
        return record


@attrs.define
class Play:
    """One `ansible-playbook` run: its exit code and its JSON callback document."""

    rc: int
    doc: dict[str, Any]
    stderr: str

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        stats = self.doc["stats"]
        assert isinstance(stats, dict)
        return stats

    def results(self, task: str) -> dict[str, dict[str, Any]]:
        """Per host, the result of every run of the task named `task` (the last one wins)."""
        found: dict[str, dict[str, Any]] = {}
        for play in self.doc["plays"]:
            for entry in play["tasks"]:
                if entry["task"]["name"] == task:
                    found.update(entry["hosts"])
        return found


@attrs.define
class Fleet:
    root: Path
    hosts: list[Host] = attrs.Factory(list)

    def add(self, name: str, release: str, *args: str) -> Host:
        workdir = self.root / name
        workdir.mkdir(mode=0o755)
        state = workdir / "state"
        daemon = start_luod(workdir, "--kernel", release, "--state-dir", str(state), *args)
        payload = workdir / "payload.img"
        payload.write_bytes(os.urandom(256 << 10))
        host = Host(name, daemon, state, payload)
        self.hosts.append(host)
        return host

    def inventory(self) -> Path:
        path = self.root / "inventory.json"
        hostvars = {
            h.name: {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "luod_socket": str(h.daemon.socket),
                "luod_payload": str(h.payload),
                "luod_restored": str(h.payload.with_suffix(".restored")),
            }
            for h in self.hosts
        }
        path.write_text(json.dumps({"all": {"hosts": hostvars}}))
        return path

    def playbook(self, playbook: Path, *args: str, **extra_vars: Any) -> Play:
        env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_HOME": str(self.root / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
            "ANSIBLE_CALLBACK_PLUGINS": str(HERE / "callback_plugins"),
            "ANSIBLE_STDOUT_CALLBACK": "results_json",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_PIPELINING": "true",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "LC_ALL": "C.UTF-8",
        }
        cmd = [
            str(BIN / "ansible-playbook"),
            "-i",
            str(self.inventory()),
            str(playbook),
            "-e",
            json.dumps(extra_vars),
            *args,
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=300, check=False
        )
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            out = f"{result.stdout}\n{result.stderr}"
            raise AssertionError(f"no JSON from ansible-playbook:\n{out}") from None
        assert isinstance(doc, dict)
        return Play(result.returncode, doc, result.stderr)

    def stop(self) -> None:
        for host in self.hosts:
            if host.daemon.proc.poll() is None:
                host.daemon.proc.kill()
                host.daemon.proc.communicate()


@pytest.fixture
def fleet(workdir: Path) -> Iterator[Fleet]:
    running = Fleet(workdir)
    yield running
    running.stop()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short enough for every host's socket path (tmp_path's can pass 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="luod-fleet-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Naysayer:
    """A participant on one host that refuses (NAKs) the next prepare it is sent."""

    def __init__(self, socket: Path, name: str = "naysayer") -> None:
        self.name = name
        self.client = Client.connect(socket, timeout=30, client_name="naysayer")
        self.client.call("participant.register", {"name": name, "sessions": []})
        self.client.call("participant.ready", {})
        self.refused = threading.Event()
        self.thread = threading.Thread(target=self._refuse, daemon=True)
        self.thread.start()

    def _refuse(self) -> None:
        for event in self.client.events(timeout=120):
            if event.event == "prepare":
                self.client.call(
                    "participant.ack",
                    {"update_id": event.data["update_id"], "phase": "prepare", "ok": False},
                )
                self.refused.set()
                return

    def close(self) -> None:
        self.client.close()
        self.thread.join(timeout=30)


@pytest.fixture
def naysayers() -> Iterator[list[Naysayer]]:
    made: list[Naysayer] = []
    yield made
    for naysayer in made:
        naysayer.close()
