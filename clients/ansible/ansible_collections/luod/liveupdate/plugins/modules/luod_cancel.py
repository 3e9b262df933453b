"""luod_cancel: take a host out of a prepared or frozen update (`luoctl cancel`); a host
with nothing to cancel is left alone."""

from __future__ import annotations

DOCUMENTATION = r"""
module: luod_cancel
short_description: Cancel a prepared or frozen live update on a host
version_added: "0.1.0"
description:
  - When the host's luod is C(prepared) or C(frozen), runs C(luoctl --json cancel), every
    preserved file is usable again and the host is back to C(normal).
  - In any other state there is nothing to cancel, C(changed=false).
extends_documentation_fragment:
  - luod.liveupdate.connection
attributes:
  check_mode:
    support: full
    description: Says whether it would cancel.
  diff_mode:
    support: full
    description: The LUO state before and after.
author:
  - luod developers (@luod)
"""

EXAMPLES = r"""
- name: Make sure no half-done update is left behind
  luod.liveupdate.luod_cancel:
    socket: "{{ luod_socket }}"
"""

RETURN = r"""
state:
  description: The LUO state after the task.
  returned: success
  type: str
  sample: normal
previous_state:
  description: The LUO state before the task.
  returned: success
  type: str
  sample: frozen
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luoctl import (
    CONNECTION_ARGS,
    Luoctl,
    LuoctlFailed,
)

CANCELLABLE = ("prepared", "frozen")


def main() -> None:
    module = AnsibleModule(argument_spec=dict(CONNECTION_ARGS), supports_check_mode=True)
    luoctl = Luoctl(module)
    try:
        before = luoctl.status()["state"]
        after = before
        if before in CANCELLABLE:
            after = "normal"
            if not module.check_mode:
                luoctl.call("cancel")
                after = luoctl.status()["state"]
    except LuoctlFailed as exc:
        luoctl.fail("the cancel", exc)
        return
    module.exit_json(
        changed=before in CANCELLABLE,
        state=after,
        previous_state=before,
        diff={"before": {"state": before}, "after": {"state": after}},
    )


if __name__ == "__main__":
    main()
