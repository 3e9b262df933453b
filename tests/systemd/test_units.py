"""systemd/luod.service and systemd/luod.socket: they load cleanly and stay hardened.

`systemd-analyze verify` insists that ExecStart= names an existing executable, so each test
renders the units into tmp_path with the installed `luod` console script (the venv's, from
the editable install) in place of /usr/bin/luod. verify exits 0 on mere warnings (unknown
keys, bad values; reference/python.md C.2), so silence on stdout and stderr is asserted as
well. Both tools work offline, without systemd as PID 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from luod.daemon.listener import ACTIVATION_FD_NAME, default_socket_path

UNITS = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_BINARY = "/usr/bin/luod"
LUOD = Path(sys.executable).parent / "luod"
TIMEOUT = 120.0

# Measured 0.7 ("SAFE") on systemd 252; the rest is headroom for scoring changes in newer
# systemd-analyze versions. The brief's ceiling is 3.0.
MAX_EXPOSURE = 3.0


def _settings(unit: Path) -> dict[str, list[str]]:
    """`Section.Key` -> values in file order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    """(luod.service, luod.socket) in tmp_path, ExecStart= pointing at the venv's luod."""
    assert LUOD.is_file(), f"{LUOD} missing: is the package installed (pip install -e .)?"
    service_text = (UNITS / "luod.service").read_text()
    assert service_text.count(INSTALLED_BINARY) == 1
    service = tmp_path / "luod.service"
    service.write_text(service_text.replace(INSTALLED_BINARY, str(LUOD)))
    socket_unit = tmp_path / "luod.socket"
    socket_unit.write_text((UNITS / "luod.socket").read_text())
    return service, socket_unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_units_verify_without_any_message(rendered: tuple[Path, Path]) -> None:
    service, socket_unit = rendered
    result = _analyze("verify", str(socket_unit), str(service))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_service_exposure_score(rendered: tuple[Path, Path]) -> None:
    service, _ = rendered
    result = _analyze("security", "--offline=yes", str(service))
    match = re.search(r"Overall exposure level for luod\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout


def test_service_contract() -> None:
    """The settings luod's code relies on, so a careless edit fails here and not in production."""
    s = _settings(UNITS / "luod.service")
    assert s["Service.Type"] == ["notify"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.WatchdogSec"] == ["30s"]
    assert s["Service.Restart"] == ["on-failure"]
    exec_start = s["Service.ExecStart"][0].split()
    assert exec_start[0] == INSTALLED_BINARY
    assert exec_start[exec_start.index("--state-dir") + 1] == "%S/luod"
    assert exec_start[exec_start.index("--log-format") + 1] == "auto"
    # a restart keeps the machine in the fd store (luod.daemon.machine_store)
    assert "--restart-keeps-machine" in exec_start
    assert int(s["Service.FileDescriptorStoreMax"][0]) >= 2
    assert s["Service.RuntimeDirectory"] == ["luod"]
    assert s["Service.RuntimeDirectoryMode"] == ["0755"]
    # Stopping the service must not delete the socket file luod.socket still listens on.
    assert s["Service.RuntimeDirectoryPreserve"] == ["yes"]
    assert s["Service.StateDirectory"] == ["luod"]
    assert s["Service.CapabilityBoundingSet"] == [""]
    assert s["Service.RestrictAddressFamilies"] == ["AF_UNIX"]
    assert s["Service.MemoryDenyWriteExecute"] == ["yes"]
    assert "DynamicUser" not in {key.split(".")[1] for key in s}
    # Socket activation is optional: the service must start without the socket unit.
    assert not {"Unit.Requires", "Unit.BindsTo", "Unit.Requisite"} & s.keys()


def test_socket_matches_the_service_and_the_cli_default() -> None:
    """luod.socket listens where luod itself would (%t is /run for the system manager)."""
    sock = _settings(UNITS / "luod.socket")
    service = _settings(UNITS / "luod.service")
    listen = sock["Socket.ListenStream"]
    assert listen == ["%t/luod/luod.sock"]
    assert listen[0].replace("%t", "/run") == str(default_socket_path({}, 0))
    exec_start = service["Service.ExecStart"][0].split()
    assert exec_start[exec_start.index("--socket") + 1] == listen[0]
    assert sock["Socket.SocketMode"] == ["0660"]
    assert sock["Socket.FileDescriptorName"] == [ACTIVATION_FD_NAME]
    assert sock["Socket.Service"] == ["luod.service"]
