"""Kernel images as data: a release string and the formats it reads and writes.

This first form knows only the KHO layer; the bundled catalog of releases with every
layer's formats and write profiles extends it.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class KernelImage:
    release: str
    reads: frozenset[str]
    kho_write: str

    def reads_kho(self) -> frozenset[str]:
        return frozenset(c for c in self.reads if c.startswith("kho-"))


DEFAULT_IMAGE = KernelImage(release="6.19.0-luod", reads=frozenset({"kho-v1"}), kho_write="kho-v1")
