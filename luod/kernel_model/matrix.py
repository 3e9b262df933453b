"""The compatibility matrix of a set of kernel images: for every ordered pair (from, to),
whether a `from` kernel can hand each kind of state to `to`, and in which format.

This is the view a distribution decides its supported upgrade and rollback paths from
(QEMU keeps the same kind of table per machine type, reference/peers.md §2.3). A cell is
exactly what `prepare` would negotiate (`negotiate.choose`, with `from` as the running
kernel, its image's default write switches, and `to` as the target) for every layer the
object type needs: the KHO and LUO roots are one layer each; a file type is its record
layer plus the FLBs its handler links (an iommufd needs `iommu-core` too). Object types
come from the handlers themselves (`filetypes.HANDLER_TYPES`), so a new handler appears
here without an edit.

A type whose record format `from` cannot write at all (no device formats before 7.1) is
not applicable to the pair and does not count against it: a pair is compatible when every
type the source kernel can write goes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from luod.kernel_model.catalog import FORMAT_LAYERS, KHO, LUO
from luod.kernel_model.filetypes import HANDLER_TYPES
from luod.kernel_model.images import KernelImage
from luod.kernel_model.negotiate import LayerProblem, choose, formats_of


@attrs.frozen
class ObjectType:
    name: str
    layers: tuple[str, ...]  # the record (or root) layer first, then its FLBs


def object_types() -> tuple[ObjectType, ...]:
    """The KHO and LUO roots, then every file type in handler registration order."""
    roots = (ObjectType(KHO, (KHO,)), ObjectType(LUO, (LUO,)))
    files = tuple(
        ObjectType(
            handler.file_type,
            (
                FORMAT_LAYERS[handler.formats[0]],
                *(FORMAT_LAYERS[flb] for flb in handler.flbs),
            ),
        )
        for handler in HANDLER_TYPES
    )
    return roots + files


@attrs.frozen
class Cell:
    """One object type for one pair: the formats chosen, or why there are none."""

    writes: bool  # the source kernel writes a format of the type's main layer
    formats: tuple[str, ...] = ()  # one per layer when it goes through
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.formats[0] if self.formats else None,
            "formats": list(self.formats),
            "writes": self.writes,
            "reason": self.reason,
        }


def cell(running: KernelImage, target: KernelImage, kind: ObjectType) -> Cell:
    writes = bool(running.writes_for(kind.layers[0]))
    chosen: list[str] = []
    for layer in kind.layers:
        result = choose(running, target, layer, formats_of(layer))
        if isinstance(result, LayerProblem):
            return Cell(writes, reason=f"{layer}: {result.reason}")
        chosen.append(result)
    return Cell(writes, tuple(chosen))


@attrs.frozen
class Pair:
    source: str
    target: str
    cells: tuple[tuple[str, Cell], ...]

    @property
    def refused(self) -> list[str]:
        """The object types the source writes that cannot go to the target."""
        return [name for name, c in self.cells if c.writes and not c.ok]

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "compatible": not self.refused,
            "refused": self.refused,
            "types": {name: c.as_json() for name, c in self.cells},
        }


def labels(images: Sequence[KernelImage]) -> list[str]:
    """A name per image: its release, with its source where two share a release."""
    releases = [i.release for i in images]
    return [
        i.release if releases.count(i.release) == 1 else f"{i.release} ({i.source})" for i in images
    ]


def matrix(images: Sequence[KernelImage]) -> dict[str, Any]:
    """Every ordered pair of `images` (a kexec into the same release included).

    Result: {releases, types, pairs: [{from, to, compatible, refused: [TYPE], types:
    {TYPE: {format, formats, writes, reason}}}]}, pairs by source then target, in the
    images' order."""
    kinds = object_types()
    names = labels(images)
    pairs = [
        Pair(src_name, dst_name, tuple((k.name, cell(src, dst, k)) for k in kinds))
        for src, src_name in zip(images, names, strict=True)
        for dst, dst_name in zip(images, names, strict=True)
    ]
    return {
        "releases": names,
        "types": [k.name for k in kinds],
        "pairs": [p.as_json() for p in pairs],
    }
