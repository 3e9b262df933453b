"""The KVM file types: VM fds and guest_memfd, and live update for them.

- `file`: `KvmVmFile` and `GuestMemfdFile` (memfd-like memory bound to one VM).
- `handler`: their handlers and record formats.

`HANDLERS` and `FLBS` are what this package registers (`filetypes`).
"""

from __future__ import annotations

from luod.kernel_model.kvm.handler import GuestMemfdHandler, KvmVmHandler
from luod.kernel_model.luo.file import FileHandler
from luod.kernel_model.luo.flb import Flb

HANDLERS: tuple[type[FileHandler], ...] = (KvmVmHandler, GuestMemfdHandler)
FLBS: tuple[type[Flb], ...] = ()
