"""Scenario 36: what a next kernel does with formats it cannot read (kexec forced past the
compatibility check), and scenario 40's KHO rules as LUO meets them."""

from __future__ import annotations

import pytest

from luod.kernel_model.errors import KernelError
from luod.kernel_model.images import KernelImage, parse_image, resolve
from luod.kernel_model.kernel import Kernel

from .conftest import new_memfd

# What each generation's kernel writes for a memfd update into itself: the 2025 formats
# (7.1.0) and the 2026 ones (7.3.0: kho-v2 radix map, luo-v2 luo_ser root, memfd-v3).
WRITES = {
    "7.1.0": {"kho": "kho-v1", "luo": "luo-v1", "memfd": "memfd-v2"},
    "7.3.0": {"kho": "kho-v2", "luo": "luo-v2", "memfd": "memfd-v3"},
}
generations = pytest.mark.parametrize("release", sorted(WRITES))


def image(release: str, reads: list[str]) -> KernelImage:
    """A test image reading `reads` (it writes kho-v1 and luo-v1 itself, to boot)."""
    reads_toml = ", ".join(f'"{c}"' for c in sorted(set(reads) | {"kho-v1", "luo-v1"}))
    text = (
        f'release = "{release}"\nreads = [{reads_toml}]\n'
        '[profiles]\ncurrent = ["kho-v1", "luo-v1"]\n'
    )
    img = parse_image(text, f"test image {release}")
    # what this kernel can *read* is exactly `reads`: the boot paths look only at that
    return KernelImage(
        release=img.release,
        reads=frozenset(reads),
        profiles=img.profiles,
        source=img.source,
    )


def frozen_with_memfd(kernel: Kernel, release: str) -> tuple[Kernel, int]:
    kernel = Kernel.cold_boot(kernel.machine, resolve(release), kernel.config)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"precious")
    luo.preserve(luo.create_session("s"), 1, memfd)
    pfn = int(memfd.folio_arrays()[1][0])
    kernel.prepare()
    kernel.freeze()
    assert luo.formats["kho"] == WRITES[release]["kho"]
    assert luo.formats["luo"] == WRITES[release]["luo"]
    return kernel, pfn


@generations
def test_unreadable_kho_root_boots_cold(kernel: Kernel, release: str) -> None:
    kernel, pfn = frozen_with_memfd(kernel, release)
    writes = WRITES[release]
    target = image("no-kho", [writes["luo"], writes["memfd"]])
    kernel.luo.target = target  # type: ignore[union-attr]
    nxt = kernel.kexec()
    assert nxt.boot_report.kind == "cold"
    assert writes["kho"] in (nxt.boot_report.reason or "")
    assert nxt.state == "normal"
    nxt.liveupdate().open_device()
    assert not nxt.liveupdate().incoming
    assert nxt.memory.read(pfn)[:8] == bytes(8)


@generations
def test_unreadable_luo_root_panics(kernel: Kernel, release: str) -> None:
    kernel, _ = frozen_with_memfd(kernel, release)
    writes = WRITES[release]
    # the other generation's root only: a luo-v1 reader gets a raw struct, a luo-v2
    # reader an FDT; both panic naming what they found
    other = "luo-v2" if writes["luo"] == "luo-v1" else "luo-v1"
    kernel.luo.target = image("no-luo", [writes["kho"], other, writes["memfd"]])  # type: ignore[union-attr]
    nxt = kernel.kexec()
    assert nxt.state == "panicked"
    assert nxt.panicked and f"'{writes['luo']}'" in nxt.panicked and other in nxt.panicked
    with pytest.raises(KernelError) as info:
        nxt.liveupdate()
    assert info.value.errno_name == "EIO"
    recovered = Kernel.cold_boot(nxt.machine, config=nxt.config)
    assert recovered.state == "normal"


@generations
def test_unknown_file_format_makes_every_open_fail(kernel: Kernel, release: str) -> None:
    kernel, _ = frozen_with_memfd(kernel, release)
    writes = WRITES[release]
    kernel.luo.target = image("no-memfd", [writes["kho"], writes["luo"]])  # type: ignore[union-attr]
    nxt = kernel.kexec()
    luo = nxt.liveupdate()
    for _ in range(2):
        with pytest.raises(KernelError) as info:
            luo.open_device()
        assert info.value.errno_name == "EIO"
        assert writes["memfd"] in info.value.message
    with pytest.raises(KernelError) as info:
        luo.retrieve_session("s")
    assert info.value.errno_name == "EIO"


def test_kho_rules(kernel: Kernel) -> None:
    """40: scratch refused; a preserved folio cannot be split; restore checks."""
    kho = kernel.kho_out
    with pytest.raises(KernelError) as info:
        kho.preserve_folio(kernel.mm.scratch.regions[0].start)
    assert info.value.errno_name == "EINVAL"
    folio = kernel.mm.alloc_folio(9)
    kho.preserve_folio(folio, 9)
    with pytest.raises(KernelError):
        kho.unpreserve_folio(folio + 1, 0)  # a part of it
    with pytest.raises(KernelError):
        kho.unpreserve_pages(folio, 256)  # half of it
    assert kho.preserved.frame_count() == 1 + 512
