"""Scenario 36: what a next kernel does with formats it cannot read (kexec forced past the
compatibility check), and scenario 40's KHO rules as LUO meets them."""

from __future__ import annotations

import pytest

from luod.kernel_model.errors import KernelError
from luod.kernel_model.images import KernelImage, parse_image
from luod.kernel_model.kernel import Kernel

from .conftest import new_memfd

FULL = ["kho-v1", "luo-v1", "memfd-v1", "memfd-v2"]


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


def frozen_with_memfd(kernel: Kernel) -> tuple[Kernel, int]:
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"precious")
    luo.preserve(luo.create_session("s"), 1, memfd)
    pfn = int(memfd.folio_arrays()[1][0])
    kernel.prepare()
    kernel.freeze()
    return kernel, pfn


def test_unreadable_kho_root_boots_cold(kernel: Kernel) -> None:
    kernel, pfn = frozen_with_memfd(kernel)
    kernel.luo.target = image("no-kho", ["luo-v1", "memfd-v2"])  # type: ignore[union-attr]
    nxt = kernel.kexec()
    assert nxt.boot_report.kind == "cold"
    assert "kho-v1" in (nxt.boot_report.reason or "")
    assert nxt.state == "normal"
    nxt.liveupdate().open_device()
    assert not nxt.liveupdate().incoming
    assert nxt.memory.read(pfn)[:8] == bytes(8)


def test_unreadable_luo_root_panics(kernel: Kernel) -> None:
    kernel, _ = frozen_with_memfd(kernel)
    kernel.luo.target = image("no-luo", ["kho-v1", "memfd-v2"])  # type: ignore[union-attr]
    nxt = kernel.kexec()
    assert nxt.state == "panicked"
    assert nxt.panicked and "luo-v1" in nxt.panicked
    with pytest.raises(KernelError) as info:
        nxt.liveupdate()
    assert info.value.errno_name == "EIO"
    recovered = Kernel.cold_boot(nxt.machine, config=nxt.config)
    assert recovered.state == "normal"


def test_unknown_file_format_makes_every_open_fail(kernel: Kernel) -> None:
    kernel, _ = frozen_with_memfd(kernel)
    kernel.luo.target = image("no-memfd", ["kho-v1", "luo-v1"])  # type: ignore[union-attr]
    nxt = kernel.kexec()
    luo = nxt.liveupdate()
    for _ in range(2):
        with pytest.raises(KernelError) as info:
            luo.open_device()
        assert info.value.errno_name == "EIO"
        assert "memfd-v2" in info.value.message
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
