"""/dev/liveupdate for unmodified programs run under `luod-run` (CLI.md "luod-run").

`UapiEndpoint` serves the kernel's 6.19+ live-update ioctls, forwarded by luod-run's
LD_PRELOAD interposer, from luod's own model (`luod.kernel_model.luo.uapi`).
"""

from __future__ import annotations

from luod.daemon.devliveupdate.endpoint import UapiEndpoint

__all__ = ["UapiEndpoint"]
