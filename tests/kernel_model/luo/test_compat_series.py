"""The bundled release series, every ordered pair: what goes through carries every byte
across, what cannot is refused at prepare (ENOEXEC) with everything still usable.

The expected verdicts are written out by hand (the history the images tell); the formats
chosen are checked against the compatibility matrix, which is `negotiate.choose` per
layer, and spot-checked by hand for the pairs that show a profile at work.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.errors import FormatUnavailable
from luod.kernel_model.images import bundled_images, default_image, resolve
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.matrix import cell, object_types

from .conftest import opened
from .workload import CONFIG, Workload, new_machine

RELEASES = [image.release for image in bundled_images()]
PAIRS = [(a, b) for a in RELEASES for b in RELEASES]
OLD_KHO = ("6.19.0", "7.0.0", "7.1.0")  # write kho-v1 only; 7.3.0 no longer reads it
# A memfd alone: only the kho-v1 / kho-v2 cut stops it (7.3.0 also drops memfd-v1, which
# 6.19.0 writes, and writes kho-v2 only, which none of the three reads).
MEMFD_REFUSED = {(a, "7.3.0") for a in OLD_KHO} | {("7.3.0", b) for b in OLD_KHO}
DEVICE_RELEASES = ["7.1.0", "7.2.0", "7.3.0"]
DEVICE_PAIRS = [(a, b) for a in DEVICE_RELEASES for b in DEVICE_RELEASES]
DEVICE_REFUSED = {("7.1.0", "7.3.0"), ("7.3.0", "7.1.0")}
# (kho, luo, memfd) chosen, by hand, where profiles and switches decide
SPOT_CHECKS = {
    ("6.19.0", "7.2.0"): ("kho-v1", "luo-v1", "memfd-v1"),  # the first hop of 6.19 -> 7.3
    ("7.2.0", "7.3.0"): ("kho-v2", "luo-v2", "memfd-v2"),  # the second hop
    ("7.3.0", "7.3.0"): ("kho-v2", "luo-v2", "memfd-v3"),
    ("7.3.0", "7.2.0"): ("kho-v2", "luo-v2", "memfd-v2"),  # rollback: profile "previous"
    ("7.2.0", "7.1.0"): ("kho-v1", "luo-v1", "memfd-v2"),  # rollback: profile "previous"
    ("7.2.0", "6.19.0"): ("kho-v1", "luo-v1", "memfd-v1"),
    ("7.0.0", "6.19.0"): ("kho-v1", "luo-v1", "memfd-v1"),  # seals are dropped
}


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = new_machine()
    yield m
    m.close()


def ids(pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{a}->{b}" for a, b in pairs]


def expected_formats(source: str, target: str) -> dict[str, str]:
    """What the matrix (negotiate.choose per layer) says each layer gets."""
    out: dict[str, str] = {}
    for kind in object_types():
        c = cell(resolve(source), resolve(target), kind)
        if c.ok:
            out.update(zip(kind.layers, c.formats, strict=True))
    return out


def run_pair(machine: Machine, source: str, target: str, *, devices: bool) -> None:
    kernel = Kernel.cold_boot(machine, resolve(source), CONFIG)
    workload = Workload(devices)
    workload.build(kernel, seed=zlib.crc32(f"{source}->{target}".encode()))
    workload.preserve(kernel)
    kernel.load(resolve(target))
    refused = DEVICE_REFUSED if devices else MEMFD_REFUSED
    preserved = kernel.kho_out.preserved.frame_count()
    if (source, target) in refused:
        with pytest.raises(FormatUnavailable) as info:
            kernel.prepare()
        assert info.value.errno_name == "ENOEXEC"
        assert target in info.value.message
        assert kernel.state == "normal"
        assert kernel.kho_out.preserved.frame_count() == preserved, "prepare left no trace"
        workload.check_usable(kernel)
        return
    kernel.prepare()
    luo = kernel.liveupdate()
    expected = expected_formats(source, target)
    assert luo.formats == {layer: expected[layer] for layer in luo.formats}
    spot = SPOT_CHECKS.get((source, target))
    if spot is not None:
        assert (luo.formats["kho"], luo.formats["luo"], luo.formats["memfd"]) == spot
    kernel.freeze()
    nxt = opened(kernel.kexec())
    assert nxt.release == target and nxt.boot_report.kind == "kho"
    assert nxt.kho_in is not None and nxt.kho_in.compatible == luo.formats["kho"]
    workload.check_after(nxt, luo.formats["memfd"])


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=ids(PAIRS))
def test_memfd_across_every_pair(machine: Machine, source: str, target: str) -> None:
    run_pair(machine, source, target, devices=False)


@pytest.mark.parametrize(("source", "target"), DEVICE_PAIRS, ids=ids(DEVICE_PAIRS))
def test_devices_across_every_pair(machine: Machine, source: str, target: str) -> None:
    run_pair(machine, source, target, devices=True)


def test_the_series_tells_a_history() -> None:
    """At least five releases; the newest is the default; it dropped the oldest formats,
    so the longest upgrade takes a hop; every pair the tests expect refused is exactly
    what the matrix refuses."""
    assert len(RELEASES) >= 5
    assert default_image().release == RELEASES[-1] == "7.3.0"
    oldest, newest = resolve(RELEASES[0]), resolve(RELEASES[-1])
    assert not (set(oldest.writable()) & newest.reads_for("memfd"))
    assert not (set(oldest.writable()) & newest.reads_for("kho"))
    hops = [r for r in RELEASES if (RELEASES[0], r) not in MEMFD_REFUSED]
    assert any((hop, RELEASES[-1]) not in MEMFD_REFUSED for hop in hops[1:])
    memfd_kinds = [k for k in object_types() if k.name in ("kho", "luo", "memfd")]
    for source, target in PAIRS:
        ok = all(cell(resolve(source), resolve(target), k).ok for k in memfd_kinds)
        assert ok == ((source, target) not in MEMFD_REFUSED), (source, target)
