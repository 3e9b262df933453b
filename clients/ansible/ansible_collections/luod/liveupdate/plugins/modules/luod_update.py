"""luod_update: live-update a host to TARGET with `luoctl update --to TARGET` (load, check,
prepare, freeze, kexec, waiting for the participants at each barrier), idempotently.

Owns the decisions around that one command: when there is nothing to do (already on TARGET
with nothing pending), what check mode runs (the compatibility check only), and what counts
as failed: a refusal or a cancel before the kexec (the host is back to normal with its data,
`last_cancel` says why), and damage after it (the kexec cannot be undone; what was lost is
listed).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: luod_update
short_description: Live-update a host's kernel to a target through luod
version_added: "0.1.0"
description:
  - Runs C(luoctl --json update --to TARGET) on the host, load, check, prepare, freeze and
    kexec in one go, waiting at each barrier for every participant to acknowledge. Any
    failure before the kexec cancels the update, and the host is back to C(normal) with
    everything preserved and usable.
  - Idempotent, a host that already runs the target's release with nothing pending (state
    C(normal) or C(updated), nothing else loaded) is left alone, C(changed=false).
  - A host that went through the kexec but whose new kernel could not restore everything
    (RV(damage) not empty) is failed, with the damage listed.
extends_documentation_fragment:
  - luod.liveupdate.connection
  - luod.liveupdate.connection.target
options:
  deadline:
    description:
      - Seconds each phase may wait for the participants (luoctl C(update --timeout)).
        Default is the daemon's own deadline.
    type: float
  force:
    description:
      - Skip the compatibility check (luoctl C(update --force)). What the target cannot
        read is lost and reported as damage.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Runs the compatibility check only; fails when the target is refused.
  diff_mode:
    support: full
    description: The running release before and after.
notes:
  - Incoming sessions of a previous update must be finished (their owners retrieve and
    finish them, or M(luod.liveupdate.luod_session)) before the next update can prepare.
author:
  - luod developers (@luod)
"""

EXAMPLES = r"""
- name: Live-update to 7.3.0
  luod.liveupdate.luod_update:
    socket: "{{ luod_socket }}"
    target: 7.3.0
  register: update

- name: Report the blackout
  ansible.builtin.debug:
    msg: "{{ update.from }} -> {{ update.to }}: blackout {{ update.blackout_ms }} ms"
"""

RETURN = r"""
from:
  description: The release before.
  returned: success
  type: str
  sample: 7.2.0
to:
  description: The release after.
  returned: success
  type: str
  sample: 7.3.0
phases:
  description: Milliseconds per phase (C(load), C(check), C(prepare), C(freeze),
    C(kexec), C(restore)); empty when nothing was done.
  returned: success
  type: dict
  sample: {"load": 0.05, "check": 0.08, "prepare": 1.7, "freeze": 0.6, "kexec": 3.0,
    "restore": 1.0}
blackout_ms:
  description: From the start of freeze until the next kernel served retrieval.
  returned: when the host was updated
  type: float
  sample: 4.8
damage:
  description: Per session and file, what the new kernel could not restore.
  returned: always
  type: list
  elements: dict
update:
  description: luod's whole update record.
  returned: when the host was updated
  type: dict
problems:
  description: The compatibility problems when the target was refused (also in check mode).
  returned: when the target was refused, or in check mode
  type: list
  elements: dict
last_cancel:
  description: luod's record of the cancel (first cause, rollback complaints) when the
    update was cancelled before the kexec.
  returned: when the update was cancelled
  type: dict
"""

import contextlib
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luoctl import (
    CONNECTION_ARGS,
    EXIT_INCOMPATIBLE,
    EXIT_REFUSED,
    TARGET_ARGS,
    Luoctl,
    LuoctlFailed,
    damage_lines,
)


def nothing_to_do(status: dict[str, Any], release: str) -> bool:
    return (
        status["kernel"]["release"] == release
        and status["state"] in ("normal", "updated")
        and status.get("loaded") in (None, release)
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CONNECTION_ARGS,
            **TARGET_ARGS,
            "deadline": {"type": "float"},
            "force": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    luoctl = Luoctl(module)
    target = module.params["target"]
    try:
        target, release = luoctl.resolve(target)
        before = luoctl.status()
    except LuoctlFailed as exc:
        luoctl.fail("the update", exc, target, damage=[])
        return
    running = before["kernel"]["release"]
    diff = {"before": {"release": running}, "after": {"release": release}}
    if nothing_to_do(before, release):
        module.exit_json(
            changed=False, to=release, phases={}, damage=[], diff=diff, **{"from": running}
        )
    if module.check_mode:
        check_only(module, luoctl, target, running, release, diff)
        return
    args = ["update", "--to", target]
    if module.params["deadline"] is not None:
        args += ["--timeout", str(module.params["deadline"])]
    if module.params["force"]:
        args.append("--force")
    started = time.time()
    rc, doc, err = luoctl.run(*args)
    if rc != 0:
        failed = LuoctlFailed(rc, doc, err)
        extra: dict[str, Any] = {"damage": []}
        if rc == EXIT_INCOMPATIBLE and isinstance(doc, dict):
            extra["problems"] = doc.get("problems", [])
        if rc == EXIT_REFUSED:
            with contextlib.suppress(LuoctlFailed):
                cancel = luoctl.status().get("last_cancel")
                # this update's cancel, not an older one (luod runs on this host: one clock)
                if cancel and cancel.get("at", 0) >= started:
                    extra["last_cancel"] = cancel
        luoctl.fail(f"the update from {running}", failed, target, **extra)
        return
    damage = list(doc.get("damage") or [])
    result = {
        "changed": True,
        "from": doc["from"],
        "to": doc["to"],
        "phases": doc["phases"],
        "blackout_ms": doc["blackout_ms"],
        "damage": damage,
        "update": doc,
        "diff": {"before": {"release": doc["from"]}, "after": {"release": doc["to"]}},
    }
    if damage:
        lost = "; ".join(damage_lines(damage))
        module.fail_json(
            msg=f"{luoctl.where}: updated {doc['from']} -> {doc['to']} with damage: {lost}",
            **result,
        )
    module.exit_json(**result)


def check_only(
    module: Any, luoctl: Luoctl, target: str, running: str, release: str, diff: dict[str, Any]
) -> None:
    """Check mode: would the update be refused?"""
    try:
        report = luoctl.check(target)
    except LuoctlFailed as exc:
        luoctl.fail("the check", exc, target, damage=[])
        return
    result = {"from": running, "to": release, "phases": {}, "damage": []}
    if not report["compatible"]:
        luoctl.refuse(running, release, report.get("problems", []), changed=False, **result)
    module.exit_json(changed=True, diff=diff, problems=report.get("problems", []), **result)


if __name__ == "__main__":
    main()
