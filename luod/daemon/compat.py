"""The compatibility check: can what is preserved now be handed to a given kernel?

Owns the one answer to that question (`check`, a report per preserved object plus the
machine-wide layers prepare will negotiate), the refusal it turns into when a caller must
not go on (`refusal`: `luod.Incompatible`, ENOEXEC, naming the first problem), and the
read-only views of the kernel images it is decided against (`images`, `catalog`,
`matrix`). `load`, `check`, `update` and `kernel *` all go through here.
"""

from __future__ import annotations

from typing import Any

from luod.daemon.errors import DaemonError, incompatible
from luod.daemon.owners import OWNERS_SESSION
from luod.kernel_model.catalog import KHO, LUO
from luod.kernel_model.images import KernelImage, bundled_images, resolve
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.matrix import matrix as compatibility_matrix
from luod.kernel_model.negotiate import LayerProblem, choose, formats_of


def check(kernel: Kernel, target: KernelImage) -> dict[str, Any]:
    """Can everything preserved on `kernel` now be handed to `target`? One entry per
    preserved object, plus the machine-wide layers `prepare` will negotiate too: the KHO
    and LUO roots, every FLB in use, and the memfd that carries luod's ownership table (it
    is preserved at every prepare, even with no other file)."""
    running = kernel.image
    problems: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []

    def machine_wide(layer: str, formats: list[str], what: str = "") -> None:
        result = choose(running, target, layer, formats)
        if isinstance(result, LayerProblem):
            problems.append(
                {
                    "format": layer,
                    "reason": what + result.reason,
                    "session": None,
                    "token": None,
                    "type": None,
                }
            )

    luo = kernel.luo
    if luo is None:
        for layer in (KHO, LUO):
            machine_wide(layer, formats_of(layer))
        return {
            "compatible": not problems,
            "target": target.release,
            "problems": problems,
            "objects": objects,
        }
    files = [
        (session.name, f)
        for session in luo.outgoing.values()
        if session.name != OWNERS_SESSION
        for f in session.files
    ]
    file_layers = {f.handler.layer for _, f in files}
    for layer, formats in luo.layers_in_use().items():
        if layer not in file_layers and (layer in (KHO, LUO) or layer.startswith("flb:")):
            machine_wide(layer, formats)
    owners = luo.handler_for_type("memfd")
    if owners is not None and owners.layer not in file_layers:
        machine_wide(owners.layer, list(owners.formats), "luod's ownership table: ")
    for session_name, f in files:
        result = choose(running, target, f.handler.layer, f.handler.formats)
        entry = {"session": session_name, "token": f.token, "type": f.handler.file_type}
        if isinstance(result, LayerProblem):
            problems.append({**entry, "format": f.handler.layer, "reason": result.reason})
            objects.append({**entry, "format": None, "reason": result.reason})
        else:
            objects.append({**entry, "format": result, "reason": None})
    return {
        "compatible": not problems,
        "target": target.release,
        "problems": problems,
        "objects": objects,
    }


def refusal(report: dict[str, Any]) -> DaemonError:
    """The `luod.Incompatible` error for a `check` report that is not compatible, naming
    its first problem (and the file, when it is one)."""
    first = report["problems"][0]
    where = (
        f" (session {first['session']!r}, token {first['token']:#x})"
        if first.get("session")
        else ""
    )
    return incompatible(
        f"{report['target']} cannot read {first['format']}{where}: {first['reason']}",
        report["target"],
    )


def matrix(targets: list[str]) -> dict[str, Any]:
    """`kernel matrix`: the bundled releases plus the images `targets` name."""
    images = list(bundled_images())
    for target in targets:
        image = resolve(target)
        if image not in images:
            images.append(image)
    return compatibility_matrix(images)


def catalog(image: KernelImage) -> dict[str, Any]:
    """One image's format catalog, as `kernel show` prints it."""
    return {
        "release": image.release,
        "summary": image.summary,
        "reads": sorted(image.reads),
        "profiles": {name: list(formats) for name, formats in image.profiles},
        "write": {c: on for c, on in image.write_switches},
        "writable": image.writable(),
        "source": image.source,
    }


def images() -> list[dict[str, Any]]:
    """The bundled images' catalogs, oldest first."""
    return [catalog(i) for i in bundled_images()]
