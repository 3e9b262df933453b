"""README "Running your own program": its C example, compiled and run under luod-run. It
kexecs by itself; luoctl then retrieves what it preserved, so the ioctl path and luod's own
protocol are seen to share one model."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from luod_run.build import compiler
from tests.run.conftest import C_DIR, Runner

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- luod-run-example:start -->\n```c\n(.*?)```\n", text, re.S)
    assert match, "the README lost its luod-run example"
    return match.group(1)


def test_readme_example_preserves_live_and_kexecs(runner: Runner, tmp_path: Path) -> None:
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "liveupdate.h").symlink_to(C_DIR / "liveupdate.h")
    (tmp_path / "my-vm.c").write_text(_example())
    cc = compiler(runner.toolchain.env)
    subprocess.run(
        [cc, "-O2", "-I", str(tmp_path), "-o", str(tmp_path / "my-vm"), str(tmp_path / "my-vm.c")],
        check=True,
    )
    before = runner.kexecs()
    done = runner.run(str(tmp_path / "my-vm"))
    assert done.returncode == 0, done.stderr
    assert runner.kexecs() == before + 1
    runner.luod.luoctl("session", "retrieve", "my-vm", check=True)
    out = tmp_path / "ram"
    runner.luod.luoctl(
        "memfd", "retrieve", "my-vm", "--token", "1", "--output", str(out), check=True
    )
    assert out.read_bytes().startswith(b"written after PRESERVE_FD\0")
    runner.luod.luoctl("session", "finish", "my-vm", check=True)
