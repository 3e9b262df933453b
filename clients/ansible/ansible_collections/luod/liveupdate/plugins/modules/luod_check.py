"""luod_check: can this host go to TARGET? `luoctl check --to TARGET`, with its per-object
report; the task fails with that report when the answer is no."""

from __future__ import annotations

DOCUMENTATION = r"""
module: luod_check
short_description: Can a host's preserved state be handed to a target kernel?
version_added: "0.1.0"
description:
  - Runs luod's compatibility check (C(luoctl --json check --to TARGET)) against
    everything the host preserves now, and returns the per-object report.
  - Fails, with the report and one line per problem in the message, when the target
    cannot read what the host would hand over. Nothing is changed either way.
extends_documentation_fragment:
  - luod.liveupdate.connection
  - luod.liveupdate.connection.target
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only.
author:
  - luod developers (@luod)
"""

EXAMPLES = r"""
- name: Pre-flight, every host must be able to reach the target
  luod.liveupdate.luod_check:
    socket: "{{ luod_socket }}"
    target: 7.3.0

- name: Check against an image file kept on the controller
  luod.liveupdate.luod_check:
    socket: "{{ luod_socket }}"
    target: images/7.4.0-rc1.toml
"""

RETURN = r"""
compatible:
  description: Whether the target can take everything preserved now.
  returned: always
  type: bool
  sample: true
target:
  description: The target's release.
  returned: success
  type: str
  sample: 7.3.0
release:
  description: The host's running release.
  returned: success
  type: str
  sample: 7.2.0
objects:
  description: Per preserved object, C(session), C(token), C(type), the C(format) it
    would be handed over in, and C(reason) when it cannot.
  returned: success
  type: list
  elements: dict
problems:
  description: What the target cannot read, each with C(format), C(reason), and
    C(session) and C(token) (both null for machine-wide formats such as the KHO root).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luoctl import (
    CONNECTION_ARGS,
    TARGET_ARGS,
    Luoctl,
    LuoctlFailed,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={**CONNECTION_ARGS, **TARGET_ARGS}, supports_check_mode=True
    )
    luoctl = Luoctl(module)
    target = module.params["target"]
    try:
        target, release = luoctl.resolve(target)
        running = luoctl.status()["kernel"]["release"]
        report = luoctl.check(target)
    except LuoctlFailed as exc:
        luoctl.fail("the check", exc, target, compatible=False, problems=[])
        return
    result = {
        "changed": False,
        "compatible": bool(report["compatible"]),
        "target": report.get("target", release),
        "release": running,
        "objects": report.get("objects", []),
    }
    problems = report.get("problems", [])
    if not result["compatible"]:
        luoctl.refuse(running, release, problems, **result)
    module.exit_json(problems=problems, **result)


if __name__ == "__main__":
    main()
