"""luod_info: one host's live-update state, read from `luoctl status` (and, on request,
`luoctl kernel matrix` for whether the previous release can be gone back to)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: luod_info
short_description: The live-update state of a host's luod
version_added: "0.1.0"
description:
  - Reads the host's luod state through C(luoctl --json status) and returns it.
  - The running release and its C(liveupdate_number), the loaded target, the sessions
    with their files, the participants, the last update (with its C(damage)) and the
    last cancel (with its cause).
  - With O(matrix=true) it also says, from C(luoctl kernel matrix), whether the running
    kernel can hand its state back to the release it was updated from.
extends_documentation_fragment:
  - luod.liveupdate.connection
options:
  matrix:
    description:
      - Also return RV(rollback), from C(luoctl kernel matrix).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
    description: Reads only.
author:
  - luod developers (@luod)
"""

EXAMPLES = r"""
- name: Read the host's live-update state
  luod.liveupdate.luod_info:
    socket: "{{ luod_socket }}"
  register: luod

- name: Show the running release
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs {{ luod.release }} ({{ luod.state }})"

- name: Can this host go back to the release it came from?
  luod.liveupdate.luod_info:
    socket: "{{ luod_socket }}"
    matrix: true
  register: luod
"""

RETURN = r"""
release:
  description: The running kernel's release.
  returned: success
  type: str
  sample: 7.3.0
liveupdate_number:
  description: How many live updates the running kernel descends from.
  returned: success
  type: int
  sample: 1
state:
  description: The LUO state, C(normal), C(prepared), C(frozen), C(updated) or C(panicked).
  returned: success
  type: str
  sample: normal
loaded:
  description: The release staged for the next kexec, or null.
  returned: success
  type: str
sessions:
  description: The caller's sessions, each with C(name), C(direction) and C(files).
  returned: success
  type: list
  elements: dict
participants:
  description: The registered participants, each with C(name), C(sessions) and C(state).
  returned: success
  type: list
  elements: dict
last_update:
  description: The last update's record (C(from), C(to), C(phases), C(blackout_ms),
    C(damage), ...), or null.
  returned: success
  type: dict
last_cancel:
  description: The last cancelled update (C(target), C(error) with the first cause,
    C(rollback)), or null.
  returned: success
  type: dict
damage:
  description: What the running kernel could not restore after the last update (empty when
    nothing was lost).
  returned: success
  type: list
  elements: dict
previous_release:
  description: The release the running kernel was updated from, or null after a cold boot.
  returned: success
  type: str
  sample: 7.2.0
rollback:
  description: With O(matrix=true), whether the running release can hand over to
    RV(previous_release) (C(release), C(possible), C(refused) object types), or null when
    there is no previous release.
  returned: when O(matrix=true)
  type: dict
  sample: {"release": "7.2.0", "possible": true, "refused": []}
status:
  description: The whole C(luoctl status) document.
  returned: success
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luoctl import (
    CONNECTION_ARGS,
    Luoctl,
    LuoctlFailed,
)


def facts(status: dict[str, Any]) -> dict[str, Any]:
    """The keys a playbook reads, lifted out of `luoctl status`."""
    last_update = status.get("last_update")
    from_release = last_update.get("from") if isinstance(last_update, dict) else None
    running = status["kernel"]["release"]
    return {
        "release": running,
        "liveupdate_number": status["kernel"]["liveupdate_number"],
        "state": status["state"],
        "loaded": status.get("loaded"),
        "sessions": status.get("sessions", []),
        "participants": status.get("participants", []),
        "last_update": last_update,
        "last_cancel": status.get("last_cancel"),
        "damage": list(last_update.get("damage") or []) if isinstance(last_update, dict) else [],
        "previous_release": from_release if from_release != running else None,
        "status": status,
    }


def rollback(luoctl: Luoctl, running: str, previous: str | None) -> dict[str, Any] | None:
    if previous is None:
        return None
    matrix = luoctl.call("kernel", "matrix")
    for pair in matrix["pairs"]:
        if pair["from"] == running and pair["to"] == previous:
            return {
                "release": previous,
                "possible": bool(pair["compatible"]),
                "refused": pair["refused"],
            }
    return {"release": previous, "possible": False, "refused": ["not a bundled release"]}


def main() -> None:
    module = AnsibleModule(
        argument_spec={**CONNECTION_ARGS, "matrix": {"type": "bool", "default": False}},
        supports_check_mode=True,
    )
    luoctl = Luoctl(module)
    try:
        result = facts(luoctl.status())
        if module.params["matrix"]:
            result["rollback"] = rollback(luoctl, result["release"], result["previous_release"])
    except LuoctlFailed as exc:
        luoctl.fail("reading the state", exc)
        return
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
