"""Format negotiation: for each layer, the newest format this kernel can write that the
target kernel reads.

A layer is the KHO root, the LUO root, one file type, or one FLB. The running kernel's
preference order is its image's profiles (`current` first) with the write switches
applied; the target must list the format in `reads`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from luod.kernel_model.catalog import FORMAT_LAYERS
from luod.kernel_model.errors import FormatUnavailable
from luod.kernel_model.images import KernelImage


@attrs.frozen
class LayerProblem:
    layer: str
    reason: str


def choose(
    running: KernelImage, target: KernelImage, layer: str, implemented: Iterable[str]
) -> str | LayerProblem:
    """The format for `layer`, or why there is none."""
    implemented = set(implemented)
    writable = [c for c in running.writes_for(layer) if c in implemented]
    if not writable:
        return LayerProblem(layer, f"kernel {running.release} writes no {layer} format")
    for compatible in writable:
        if compatible in target.reads:
            return compatible
    readable = sorted(target.reads_for(layer)) or ["none"]
    return LayerProblem(
        layer,
        f"kernel {running.release} writes {', '.join(writable)}; "
        f"{target.release} reads {', '.join(readable)}",
    )


def negotiate(
    running: KernelImage, target: KernelImage, layers: Mapping[str, Iterable[str]]
) -> dict[str, str]:
    """A format per layer (`layers` maps layer to the formats implemented for it)."""
    chosen: dict[str, str] = {}
    for layer, implemented in layers.items():
        result = choose(running, target, layer, implemented)
        if isinstance(result, LayerProblem):
            raise FormatUnavailable(
                f"cannot hand {layer} state to {target.release}: {result.reason}",
                obj=layer,
            )
        chosen[layer] = result
    return chosen


def formats_of(layer: str) -> list[str]:
    return [c for c, lay in FORMAT_LAYERS.items() if lay == layer]
