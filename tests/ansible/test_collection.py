"""The collection as Ansible sees it: `ansible-doc` renders every module (description,
options, examples, return values) and `ansible-galaxy collection build` packs it with its
playbooks."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from ..e2e.conftest import BIN
from .conftest import COLLECTION, COLLECTIONS

MODULES = ["luod_info", "luod_check", "luod_update", "luod_cancel", "luod_session"]


def ansible(tool: str, home: Path, *args: str) -> str:
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(home / "ansible-home"),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "LC_ALL": "C.UTF-8",
    }
    result = subprocess.run(
        [str(BIN / tool), *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ansible_doc_renders_every_module(tmp_path: Path) -> None:
    names = [f"luod.liveupdate.{m}" for m in MODULES]
    listed = ansible("ansible-doc", tmp_path, "-t", "module", "-l", "luod.liveupdate")
    assert sorted(line.split()[0] for line in listed.splitlines()) == sorted(names)
    docs = json.loads(ansible("ansible-doc", tmp_path, "-t", "module", "--json", *names))
    for name in names:
        doc = docs[name]
        assert doc["doc"]["short_description"] and doc["doc"]["description"]
        options = doc["doc"]["options"]
        assert {"socket", "luoctl", "timeout", "host"} <= set(options)
        assert doc["examples"].strip() and doc["return"]
    assert {"target", "remote_src"} <= set(docs["luod.liveupdate.luod_update"]["doc"]["options"])
    text = ansible("ansible-doc", tmp_path, "-t", "module", *names)
    assert all(
        f"MODULE {name}" in text.replace("\x1b[1m", "").replace("\x1b[0m", "") for name in names
    )


def test_galaxy_build_packs_modules_and_playbooks(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    ansible(
        "ansible-galaxy",
        tmp_path,
        "collection",
        "build",
        str(COLLECTION),
        "--output-path",
        str(out),
    )
    (archive,) = out.glob("luod-liveupdate-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
    expected = {f"plugins/modules/{m}.py" for m in MODULES} | {
        "playbooks/rolling-update.yml",
        "playbooks/rollback.yml",
        "plugins/module_utils/luoctl.py",
        "MANIFEST.json",
    }
    assert expected <= members
    assert not any("__pycache__" in m for m in members)
