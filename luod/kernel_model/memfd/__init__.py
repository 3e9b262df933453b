"""The memfd file types: shmem memfds and hugetlb memfds, and live update for them.

- `runs`: folio runs, the representation of a page cache.
- `pagecache`: a memfd's folios in emulated RAM, and the byte copies in and out.
- `seals`: the F_SEAL_* seals.
- `file`: `MemfdFile`, the shmem memfd: size, offset, seals and their policy.
- `records`: the `memfd-v1`..`memfd-v3` record formats.
- `handler`: `MemfdHandler`, the preserve/prepare/freeze/retrieve lifecycle.
- `hugetlb_pool`: the hugetlb pools huge pages come from.
- `hugetlb`: `HugetlbMemfdFile`, its handler and the `hugetlb-v1` FLB.

`HANDLERS` and `FLBS` are what this package registers (`filetypes`).
"""

from __future__ import annotations

from luod.kernel_model.luo.file import FileHandler
from luod.kernel_model.luo.flb import Flb
from luod.kernel_model.memfd.handler import MemfdHandler
from luod.kernel_model.memfd.hugetlb import HugetlbFlb, HugetlbMemfdHandler

HANDLERS: tuple[type[FileHandler], ...] = (MemfdHandler, HugetlbMemfdHandler)
FLBS: tuple[type[Flb], ...] = (HugetlbFlb,)
