"""The vfio-pci file type: a PCI device bound to an iommufd, and live update for it.

- `file`: `VfioDeviceFile`.
- `handler`: `VfioPciHandler`, its record format, and the pci FLB.

`HANDLERS` and `FLBS` are what this package registers (`filetypes`).
"""

from __future__ import annotations

from luod.kernel_model.luo.file import FileHandler
from luod.kernel_model.luo.flb import Flb
from luod.kernel_model.vfio_pci.handler import PciFlb, VfioPciHandler

HANDLERS: tuple[type[FileHandler], ...] = (VfioPciHandler,)
FLBS: tuple[type[Flb], ...] = (PciFlb,)
