"""`luoctl apply` with plans in the wrong order for each dependency edge, and a correct
one, through a real daemon (CLI.md "Plans")."""

from __future__ import annotations

import json

import pytest

from .conftest import LuodProcess

OBJECTS = {
    "ram": '  [[session.object]]\n  name = "ram"\n  type = "memfd"\n  token = 1\n  size = "4M"\n',
    "iommu": (
        '  [[session.object]]\n  name = "iommu"\n  type = "iommufd"\n  token = 2\n'
        '  maps = ["ram"]\n'
    ),
    "nic": (
        '  [[session.object]]\n  name = "nic"\n  type = "vfio-pci"\n  token = 3\n'
        '  iommufd = "iommu"\n  bdf = "0000:01:00.0"\n'
    ),
    "vm": '  [[session.object]]\n  name = "vm"\n  type = "kvm-vm"\n  token = 4\n',
    "gmem": (
        '  [[session.object]]\n  name = "gmem"\n  type = "guest_memfd"\n  token = 5\n'
        '  vm = "vm"\n  size = "2M"\n'
    ),
}


def plan(order: list[str]) -> str:
    return '[[session]]\nname = "vm1"\n' + "".join(OBJECTS[n] for n in order)


@pytest.mark.parametrize(
    ("order", "late", "early"),
    [
        (["iommu", "ram", "nic", "vm", "gmem"], "iommu", "ram"),
        (["ram", "nic", "iommu", "vm", "gmem"], "nic", "iommu"),
        (["ram", "iommu", "nic", "gmem", "vm"], "gmem", "vm"),
    ],
)
def test_wrong_order_is_refused_and_released(
    luod: LuodProcess, order: list[str], late: str, early: str
) -> None:
    (luod.workdir / "plan.toml").write_text(plan(order))
    result = luod.luoctl("apply", "plan.toml")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["name"] == "luod.DependencyNotPreserved"
    assert f"'{late}'" in error["message"] and f"'{early}'" in error["message"]
    assert luod.json("session", "list") == []
    status = luod.json("status")
    assert status["state"] == "normal"  # type: ignore[index]


def test_a_correct_plan_survives_an_update(luod: LuodProcess) -> None:
    (luod.workdir / "plan.toml").write_text(plan(["ram", "iommu", "nic", "vm", "gmem"]))
    applied = luod.json("apply", "plan.toml")
    files = applied["sessions"][0]["files"]  # type: ignore[index]
    assert [f["type"] for f in files] == ["memfd", "iommufd", "vfio-pci", "kvm-vm", "guest_memfd"]
    assert luod.luoctl("update", "--to", "7.2.0").returncode == 0
    assert luod.luoctl("session", "retrieve", "vm1").returncode == 0
    for token in (1, 2, 3, 4, 5):
        assert luod.luoctl("file", "retrieve", "vm1", "--token", str(token)).returncode == 0
    vetoed = luod.luoctl("session", "finish", "vm1")
    assert json.loads(vetoed.stdout)["error"]["errno"] == "EBUSY"  # not reclaimed yet
    assert luod.luoctl("file", "reclaim", "vm1", "--token", "2").returncode == 0
    assert luod.luoctl("session", "finish", "vm1").returncode == 0
