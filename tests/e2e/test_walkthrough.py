"""The README's walkthrough, run byte for byte in an empty directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    block = re.search(
        r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S
    )
    assert block, "README lost its walkthrough block"
    return block.group(1)


def test_readme_walkthrough(workdir: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("LUOD_SOCKET", None)
    script = "set -euo pipefail\n" + walkthrough() + "wait\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the bytes survived the kexec" in result.stdout
    assert "7.0.0" in result.stdout  # the status at the end names the new kernel
    assert not (workdir / "luod.sock").exists(), "the daemon stopped cleanly"
