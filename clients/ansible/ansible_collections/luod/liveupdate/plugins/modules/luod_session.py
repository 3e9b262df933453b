"""luod_session: stage state in a LUO session before an update, and claim it after one.

Each `state` is one step of a session's life, made idempotent by reading the session from
`luoctl status` first: `present` creates the outgoing session, `preserved` also preserves a
memfd with a copy of a file at a token, `retrieved` claims the incoming session after the
kexec (and with `dest`, writes one memfd's bytes out), `finished` finishes it, `absent`
closes an outgoing one.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: luod_session
short_description: Create, preserve into, retrieve and finish LUO sessions on a host
version_added: "0.1.0"
description:
  - Stages state before a live update and claims it after one, through luoctl's
    C(session) and C(memfd) commands. Sessions belong to the uid the module runs as.
extends_documentation_fragment:
  - luod.liveupdate.connection
options:
  name:
    description: The session's name.
    type: str
    required: true
  state:
    description:
      - V(present), the outgoing session exists (C(luoctl session create)).
      - V(preserved), it exists and holds a memfd at O(token) with a copy of O(src)
        (C(luoctl memfd preserve)); an existing token is left alone.
      - V(retrieved), after the kexec, the incoming session is claimed
        (C(luoctl session retrieve)); with O(token) and O(dest), that memfd's bytes are
        written to O(dest) on the host and its RV(sha256) returned.
      - V(finished), the incoming session is finished (files not retrieved are
        discarded); a session that is gone already is left alone.
      - V(absent), the outgoing session is closed, every file unpreserved.
    type: str
    choices: [present, preserved, retrieved, finished, absent]
    default: present
  token:
    description: The file's token in the session (required with V(preserved)).
    type: int
  src:
    description: A file on the host whose bytes the memfd gets (required with V(preserved)).
    type: path
  dest:
    description: With V(retrieved) and O(token), where the memfd's bytes are written.
    type: path
  size:
    description: Truncate or extend the memfd to this size (C(4096), C(64K), C(2M), ...).
    type: str
  seals:
    description: Seals to add to the memfd.
    type: list
    elements: str
    choices: [seal, shrink, grow, write, future_write, exec]
  page_size:
    description: V(4K), or V(2M) / V(1G) for a hugetlb memfd from the daemon's pools.
    type: str
attributes:
  check_mode:
    support: full
    description: Says what it would do.
  diff_mode:
    support: none
    description: Not supported.
author:
  - luod developers (@luod)
"""

EXAMPLES = r"""
- name: Stage the guest's memory before the update
  luod.liveupdate.luod_session:
    socket: "{{ luod_socket }}"
    name: vm1
    state: preserved
    token: 1
    src: /var/lib/vm1/ram.img

- name: After the update, get it back
  luod.liveupdate.luod_session:
    socket: "{{ luod_socket }}"
    name: vm1
    state: retrieved
    token: 1
    dest: /var/lib/vm1/ram.img
  register: ram

- name: Done with it
  luod.liveupdate.luod_session:
    socket: "{{ luod_socket }}"
    name: vm1
    state: finished
"""

RETURN = r"""
session:
  description: The session as luod shows it afterwards (C(name), C(direction), C(files)),
    or null once it is gone.
  returned: success
  type: dict
token:
  description: The memfd's token (V(preserved), and V(retrieved) with O(token)).
  returned: when O(token) is given
  type: int
  sample: 1
size:
  description: The memfd's size in bytes.
  returned: when a memfd was preserved or retrieved by this task
  type: int
sha256:
  description: Hex SHA-256 of the retrieved memfd's bytes.
  returned: with V(retrieved), O(token) and O(dest), outside check mode
  type: str
seals:
  description: The retrieved memfd's seals.
  returned: with V(retrieved), O(token) and O(dest), outside check mode
  type: list
  elements: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luoctl import (
    CONNECTION_ARGS,
    Luoctl,
    LuoctlFailed,
)


def find(status: dict[str, Any], name: str, direction: str) -> dict[str, Any] | None:
    for session in status.get("sessions", []):
        if session["name"] == name and session["direction"] == direction:
            return dict(session)
    return None


def has_token(session: dict[str, Any] | None, token: int) -> dict[str, Any] | None:
    files = session["files"] if session else []
    return next((f for f in files if f["token"] == token), None)


class Step:
    """One task's run: what changed and what to return, against one session."""

    def __init__(self, module: Any, luoctl: Luoctl) -> None:
        self.module = module
        self.luoctl = luoctl
        self.name: str = module.params["name"]
        self.changed = False
        self.result: dict[str, Any] = {}
        self._status: dict[str, Any] | None = None

    def do(self, *args: str) -> Any:
        """Run a changing luoctl command (not in check mode)."""
        self.changed = True
        if self.module.check_mode:
            return None
        self._status = None
        return self.luoctl.call(*args)

    def session(self, direction: str) -> dict[str, Any] | None:
        """The session as luod shows it now (status is read again after a change)."""
        if self._status is None:
            self._status = self.luoctl.status()
        return find(self._status, self.name, direction)

    def present(self) -> None:
        if self.session("outgoing") is None:
            self.do("session", "create", self.name)

    def preserved(self) -> None:
        params = self.module.params
        self.present()
        token = params["token"]
        self.result["token"] = token
        if self.module.check_mode and self.changed:
            return
        if has_token(self.session("outgoing"), token):
            return
        args = ["memfd", "preserve", self.name, "--token", str(token), "--from", params["src"]]
        if params["size"]:
            args += ["--size", params["size"]]
        if params["seals"]:
            args += ["--seal", ",".join(params["seals"])]
        if params["page_size"]:
            args += ["--page-size", params["page_size"]]
        doc = self.do(*args)
        if doc is not None:
            self.result["size"] = doc["size"]

    def retrieved(self) -> None:
        params = self.module.params
        session = self.session("incoming")
        if session is None:
            raise LuoctlFailed(1, None, f"no incoming session '{self.name}' to retrieve")
        if not session.get("retrieved"):
            self.do("session", "retrieve", self.name)
        token = params["token"]
        if token is None:
            return
        self.result["token"] = token
        file = has_token(session, token)
        if file is None:
            raise LuoctlFailed(1, None, f"session '{self.name}' has no token {token}")
        if not file.get("retrieved"):
            self.changed = True
        if params["dest"] and not self.module.check_mode:
            doc = self.luoctl.call(
                "memfd", "retrieve", self.name, "--token", str(token), "--output", params["dest"]
            )
            self._status = None
            self.result.update(size=doc["size"], sha256=doc["sha256"], seals=doc["seals"])

    def finished(self) -> None:
        if self.session("incoming") is not None:
            self.do("session", "finish", self.name)

    def absent(self) -> None:
        if self.session("outgoing") is not None:
            self.do("session", "close", self.name)


REQUIRED_BY_STATE = [("state", "preserved", ("token", "src"))]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **CONNECTION_ARGS,
            "name": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "default": "present",
                "choices": ["present", "preserved", "retrieved", "finished", "absent"],
            },
            "token": {"type": "int", "no_log": False},
            "src": {"type": "path"},
            "dest": {"type": "path"},
            "size": {"type": "str"},
            "seals": {
                "type": "list",
                "elements": "str",
                "choices": ["seal", "shrink", "grow", "write", "future_write", "exec"],
            },
            "page_size": {"type": "str"},
        },
        required_if=REQUIRED_BY_STATE,
        supports_check_mode=True,
    )
    luoctl = Luoctl(module)
    step = Step(module, luoctl)
    state = module.params["state"]
    try:
        getattr(step, state)()
        session = step.session("outgoing") or step.session("incoming")
    except LuoctlFailed as exc:
        luoctl.fail(f"session {step.name} {state}", exc)
        return
    module.exit_json(changed=step.changed, session=session, **step.result)


if __name__ == "__main__":
    main()
