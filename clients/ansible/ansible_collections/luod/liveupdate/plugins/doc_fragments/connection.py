"""The options every luod.liveupdate module shares (`extends_documentation_fragment:
luod.liveupdate.connection`): which daemon to talk to and which luoctl to use. Their
argument spec is `CONNECTION_ARGS` in module_utils/luoctl.py."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - The host's luod socket. One inventory variable per host, for example
        C(luod_socket), passed as O(socket) points every task at that host's daemon.
      - Default is luoctl's own rule, C($LUOD_SOCKET), else C(/run/luod/luod.sock) for
        root, else C($XDG_RUNTIME_DIR/luod/luod.sock).
    type: path
  luoctl:
    description:
      - Path of the luoctl binary on the host.
      - Default is luoctl run inside the module's own process when the Python interpreter
        running the module has luod installed (same command line, same JSON, no extra
        process), else the C(luoctl) next to that interpreter (the bin directory of the
        virtualenv luod is installed in), else the first C(luoctl) on C(PATH).
    type: path
  timeout:
    description:
      - Seconds luoctl waits to connect and for each reply (its C(--timeout)).
    type: float
    default: 30.0
  host:
    description:
      - The name failure messages give the host.
      - Default is the inventory hostname (set by the collection's action plugin), else
        the host's own hostname.
    type: str
notes:
  - The modules drive C(luoctl --json) and read its exit codes; they need luod's client
    (the C(luod) Python package, which installs C(luoctl)) on the host.
requirements:
  - luoctl (from the luod package) on the managed host
"""

    # `extends_documentation_fragment: luod.liveupdate.connection.target`
    TARGET = r"""
options:
  target:
    description:
      - The kernel to go to, a bundled release (for example C(7.3.0)) or an image file.
      - An image file that exists on the controller is copied to the host for the task,
        unless O(remote_src=true); otherwise the path is taken on the host.
    type: str
    required: true
  remote_src:
    description:
      - Take O(target) as a path on the host even if the controller has such a file.
    type: bool
    default: false
"""
