"""The installed console scripts start, answer --help and --version, and luoctl stays light.

These run the real entry points of the active environment (the bin directory next to
`sys.executable`, i.e. `.venv/bin` under `make test`), so they also check the packaging:
`clients/luoctl` and `clients/luod_vmm` must install as top-level packages.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import luod

BIN_DIR = Path(sys.executable).parent
SCRIPTS = ["luod", "luoctl", "luod-vmm"]
# What the thin client must never load: each costs tens of milliseconds per invocation.
HEAVY_MODULES = frozenset({"trio", "numpy", "structlog", "cattrs"})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_version_prints_name_and_version(script: str) -> None:
    """`SCRIPT --version` exits 0 and prints the script name and the package version."""
    result = _run(str(BIN_DIR / script), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{script} {luod.__version__}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero_with_usage(script: str) -> None:
    """`SCRIPT --help` exits 0 and prints a usage line naming the script."""
    result = _run(str(BIN_DIR / script), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script} ")
    assert "--version" in result.stdout


@pytest.mark.parametrize("script", ["luoctl", "luod-vmm"])
def test_client_without_command_is_usage_error(script: str) -> None:
    """A client run with no command prints help to stderr and exits 2."""
    result = _run(str(BIN_DIR / script))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"usage: {script} " in result.stderr


def _imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` output (`import time: self | cum | name`)."""
    names: set[str] = set()
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line.split("|")
        if len(fields) != 3 or fields[2].strip() == "imported package":  # header line
            continue
        names.add(fields[2].strip())
    return names


def test_luoctl_imports_nothing_heavy() -> None:
    """Importing `luoctl.main` loads no trio, numpy, structlog or cattrs."""
    result = _run(sys.executable, "-X", "importtime", "-c", "import luoctl.main")
    assert result.returncode == 0, result.stderr
    modules = _imported_modules(result.stderr)
    assert "luoctl.main" in modules  # the parse works (and the import really happened)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY_MODULES)
    assert heavy == []
