"""The iommufd file type: an IOAS with its IOMMU domain, and live update for it.

- `file`: `IommufdFile`, its mappings and the domain's page tables.
- `handler`: `IommufdHandler`, its record format, and the iommu-core FLB.

`HANDLERS` and `FLBS` are what this package registers (`filetypes`).
"""

from __future__ import annotations

from luod.kernel_model.iommufd.handler import IommuCoreFlb, IommufdHandler
from luod.kernel_model.luo.file import FileHandler
from luod.kernel_model.luo.flb import Flb

HANDLERS: tuple[type[FileHandler], ...] = (IommufdHandler,)
FLBS: tuple[type[Flb], ...] = (IommuCoreFlb,)
