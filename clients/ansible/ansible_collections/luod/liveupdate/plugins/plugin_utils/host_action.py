"""The controller side of every luod.liveupdate module (their action plugins).

Owns two things only the controller knows: the inventory hostname, which the module's
failure messages name (`host`), and image files kept on the controller: a `target` that is
a file on the controller (and `remote_src` is false) is copied to the host's temporary
directory for the task, and the module is given that copy.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase


class HostAction(ActionBase):  # type: ignore[misc]  # ansible ships no type hints
    # A temporary directory on the host is made only for an image file to copy: most tasks
    # do not need one, and making and removing it costs two commands on the host.
    TRANSFERS_FILES = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        super().run(tmp, task_vars)
        args = dict(self._task.args)
        if not args.get("host"):
            args["host"] = task_vars.get("inventory_hostname")
        target = args.get("target")
        remote_src = boolean(args.get("remote_src", False), strict=False)
        shell = self._connection._shell
        try:
            if isinstance(target, str) and not remote_src:
                local = os.path.expanduser(target)
                if os.path.isfile(local):
                    if shell.tmpdir is None:
                        self._make_tmp_path()
                    copy = shell.join_path(shell.tmpdir, os.path.basename(local))
                    self._transfer_file(local, copy)
                    self._fixup_perms2((shell.tmpdir, copy))
                    args["target"] = copy
            result: dict[str, Any] = self._execute_module(
                module_name=self._task.action, module_args=args, task_vars=task_vars
            )
            return result
        finally:
            if shell.tmpdir is not None:
                self._remove_tmp_path(shell.tmpdir)
