"""How the rollout and the modules fail, against real daemons.

A participant on the second of four hosts NAKs the prepare: that host's update is cancelled
with its data intact, the play stops there, and the hosts after it are not touched. The
modules' own failures (luod unreachable, EBUSY, damage after the kexec) name the host, the
target and the cause;
an image file kept on the controller is shipped to the host for the check.
"""

from __future__ import annotations

from ..e2e.conftest import LUOCTL
from .conftest import HERE, PLAYBOOKS, ROOT, Fleet, Naysayer

IMAGES = ROOT / "luod/kernel_model/images"

TARGET = "7.3.0"


def test_a_nak_stops_the_rollout_at_that_host(fleet: Fleet, naysayers: list[Naysayer]) -> None:
    hosts = [fleet.add(f"host{i}", "7.2.0") for i in range(1, 5)]
    staged = fleet.playbook(HERE / "stage.yml")
    assert staged.rc == 0, staged.doc
    assert all(staged.stats[h.name]["changed"] == 1 for h in hosts)
    assert all(h.status()["sessions"][0]["files"][0]["token"] == 1 for h in hosts)
    naysayers.append(Naysayer(hosts[1].daemon.socket))

    rollout = fleet.playbook(PLAYBOOKS / "rolling-update.yml", luod_target=TARGET)
    assert rollout.rc != 0
    assert naysayers[0].refused.is_set()
    updates = rollout.results("Live-update the host to the target")
    assert sorted(updates) == ["host1", "host2"]
    assert updates["host1"]["changed"] is True
    failed = updates["host2"]
    assert failed["failed"] is True
    assert "host2" in failed["msg"] and TARGET in failed["msg"] and "naysayer" in failed["msg"]
    assert failed["error"]["errno"] == "ECANCELED"
    assert "naysayer" in failed["last_cancel"]["error"]["message"]
    stopped = rollout.results("Stop the rollout at this host")["host2"]
    assert stopped["failed"] is True and "naysayer" in stopped["msg"]

    assert hosts[0].status()["kernel"]["release"] == TARGET
    nak = hosts[1].status()
    assert (nak["state"], nak["kernel"]["release"], nak["last_update"]) == ("normal", "7.2.0", None)
    assert [
        (s["name"], s["direction"], [f["token"] for f in s["files"]]) for s in nak["sessions"]
    ] == [("vm1", "outgoing", [1])]
    assert nak["last_cancel"]["target"] == TARGET
    for untouched in hosts[2:]:
        status = untouched.status()
        assert status["kernel"]["release"] == "7.2.0"
        assert (status["last_update"], status["last_cancel"]) == (None, None)
    assert all(rollout.stats[h.name]["changed"] == 0 for h in hosts[2:])


def test_failures_name_the_host_the_target_and_the_cause(fleet: Fleet) -> None:
    busy = fleet.add("busy", "7.2.0")
    gone = fleet.add("gone", "7.2.0")
    hurt = fleet.add("hurt", "7.2.0", "--enable-faults")
    busy.daemon.luoctl("prepare", check=True)
    gone.daemon.stop()
    hurt.stage()
    hurt.daemon.luoctl("fault", "arm", "boot.kho-parse", check=True)

    image = fleet.root / "next.toml"
    image.write_text(
        (IMAGES / f"{TARGET}.toml")
        .read_text()
        .replace(f'release = "{TARGET}"', 'release = "9.9.9"')
    )
    probe = fleet.playbook(
        HERE / "probe.yml", luod_target=TARGET, luod_image=str(image), luod_luoctl=LUOCTL
    )
    create = probe.results("Create a session")
    assert create["busy"]["failed"] is True
    assert "busy" in create["busy"]["msg"] and "EBUSY" in create["busy"]["msg"]
    update = probe.results("Update")
    message = update["gone"]["msg"]
    assert "gone" in message and TARGET in message and "luod unreachable" in message
    assert update["gone"]["rc"] == 69
    damaged = update["hurt"]
    assert damaged["failed"] is True and damaged["changed"] is True
    # both sessions, the one the probe created first and vm1
    lost = sorted((d["session"], d["step"]) for d in damaged["damage"])
    assert lost == [("probe", "boot"), ("vm1", "boot")]
    assert "hurt" in damaged["msg"] and "with damage:" in damaged["msg"]
    assert "vm1 (boot)" in damaged["msg"]
    assert "booted cold" in damaged["msg"]
    cancel = probe.results("Cancel")
    assert cancel["busy"]["changed"] is True
    assert cancel["busy"]["previous_state"] == "prepared" and cancel["busy"]["state"] == "normal"
    assert busy.status()["state"] == "normal"
    checked = probe.results("Check against an image file on the controller")["busy"]
    assert (checked["compatible"], checked["target"], checked["release"]) == (
        True,
        "9.9.9",
        "7.2.0",
    )
