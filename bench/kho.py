"""KHO cost on a 1 TiB machine, as ratios against numpy doing the bare bit work.

Not a test: prints a table. For each workload the measured span is preserve + finalize +
kexec + reserve (the next kernel parses the map, releases what is lost, reserves what is
kept). Folios that lie back to back are handled as ranges; (c) scatters them so that the
per-block path is measured too. The baseline is numpy setting the same bits in a bitmap
and scanning them back to block numbers, measured in the same run. A second table compares
the two generations of the preserved-memory map, `kho-v1` (per-order bitmaps in linked
chunks) and `kho-v2` (the radix tree), on workloads (a) and (b): bytes of map written at
finalize and the same preserve..reserve span. A third compares a kexec with nothing
preserved on 16 GiB and on 1 TiB: the cost must not grow with RAM.

Run: `.venv/bin/python bench/kho.py` (or `make bench`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
from _summary import record  # bench/_summary.py, beside this file

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE, PhysicalMemory
from luod.kernel_model.extents import Extents
from luod.kernel_model.images import KernelImage, default_image, parse_image
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.kho.formats import FORMATS, MemMapFormat
from luod.kernel_model.kho.preserved import PreservedSet
from luod.kernel_model.mm import FrameAllocator

KHO_ONLY = BootConfig(liveupdate=False)  # KHO alone: no LUO phases before the kexec

GiB = 1 << 30
TiB = 1 << 40


def writing(kho: str) -> KernelImage:
    """A kernel image that writes the KHO map format `kho` and reads both generations, so
    the comparison does not depend on which format the bundled images prefer."""
    text = f"""
release = "bench-{kho}"
reads = ["kho-v1", "kho-v2", "luo-v1", "memfd-v1", "memfd-v2"]
[profiles]
current = ["{kho}", "luo-v1", "memfd-v2"]
"""
    return parse_image(text, f"bench {kho} image")


def best_of(n: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(n))


def numpy_baseline(
    ram: int, order: int, blocks: np.ndarray[tuple[int], np.dtype[np.int64]]
) -> float:
    """Set the blocks' bits in a bitmap of the machine's size and scan them back."""
    start = time.perf_counter()
    bits = np.zeros((ram >> 12) >> order, dtype=np.bool_)
    bits[blocks] = True
    found = np.flatnonzero(bits)
    elapsed = time.perf_counter() - start
    assert found.size == blocks.size
    return elapsed


def measuring(fmt: MemMapFormat, written: list[int]) -> MemMapFormat:
    """`fmt` with a writer that also appends the bytes of map it wrote to `written`."""

    def write(
        preserved: PreservedSet, mm: FrameAllocator, memory: PhysicalMemory
    ) -> tuple[int, Extents]:
        phys, used = fmt.write(preserved, mm, memory)
        written.append(used.total() * PAGE_SIZE)  # both writers write whole pages
        return phys, used

    return MemMapFormat(fmt.compatible, write, fmt.read)


def preserve_and_kexec(
    ram: int,
    order: int,
    count: int | None,
    stride: int = 1,
    image: KernelImage | None = None,
    written: list[int] | None = None,
) -> tuple[float, int]:
    """Seconds for preserve + finalize + kexec + reserve of `count` folios (None: all),
    taking every `stride`-th folio of an allocation (stride 2: no two are adjacent), on a
    kernel running (and kexec-ing into) `image`; the map's size is appended to `written`."""
    machine = Machine.create(ram)
    try:
        image = image or default_image()
        kernel = Kernel.cold_boot(machine, image, KHO_ONLY)
        if written is not None:
            kernel.kho_out.format = measuring(kernel.kho_out.format, written)
        if count is None:
            normal = kernel.mm.free_frames() - kernel.mm.scratch_extents.total()
            count = (normal >> order) - 4  # room for alignment, the map, the next kernel
        pfns = kernel.mm.alloc_folios(order, count * stride)[::stride].copy()
        gc.collect()
        start = time.perf_counter()
        kernel.kho_out.preserve_folios(pfns, order)
        nxt = kernel.kexec(image)
        elapsed = time.perf_counter() - start
        assert nxt.boot_report.kind == "kho", nxt.boot_report.reason
        assert nxt.boot_report.preserved_frames == (count << order) + 1
        return elapsed, count
    finally:
        machine.close()


def empty_kexec(ram: int) -> float:
    machine = Machine.create(ram)
    try:
        kernel = Kernel.cold_boot(machine, config=KHO_ONLY)
        start = time.perf_counter()
        nxt = kernel.kexec()
        elapsed = time.perf_counter() - start
        assert nxt.boot_report.kind == "kho"
        return elapsed
    finally:
        machine.close()


def compare_formats(workloads: list[tuple[str, int, int | None, int]]) -> None:
    images = {kho: writing(kho) for kho in ("kho-v1", "kho-v2")}
    for compatible, image in images.items():
        assert image.kho_write == compatible and compatible in FORMATS
    print("\nkho-v1 (bitmap chunks) vs kho-v2 (radix tree), 1 TiB machine (best of 3)\n")
    print(
        f"{'workload':<34} {'v1 map KiB':>10} {'v2 map KiB':>10} "
        f"{'v1 s':>8} {'v2 s':>8} {'v2/v1':>6}"
    )
    for label, order, count, stride in workloads:
        size: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for compatible, image in images.items():
            written: list[int] = []
            runs = [preserve_and_kexec(TiB, order, count, stride, image, written) for _ in range(3)]
            assert len(set(written)) == 1, "same workload, same map"
            size[compatible] = written[0]
            seconds[compatible] = min(r[0] for r in runs)
        v1, v2 = seconds["kho-v1"], seconds["kho-v2"]
        print(
            f"{label:<34} {size['kho-v1'] >> 10:>10} {size['kho-v2'] >> 10:>10} "
            f"{v1:>8.3f} {v2:>8.3f} {v2 / v1:>6.2f}"
        )
        record("kho", f"{label}: kho-v2 / kho-v1 time", v2 / v1)


def main() -> None:
    print("KHO: preserve + finalize + kexec + reserve on a 1 TiB machine (best of 3)\n")
    print(f"{'workload':<34} {'folios':>10} {'seconds':>9} {'numpy':>9} {'ratio':>6}")
    workloads = [
        ("(a) all of RAM in 2 MiB folios", 9, None, 1),
        ("(b) 64 GiB in 4 KiB folios", 0, (64 * GiB) >> 12, 1),
        ("(c) 64 GiB, every other 4 KiB", 0, (64 * GiB) >> 12, 2),
    ]
    for label, order, count, stride in workloads:
        runs = [preserve_and_kexec(TiB, order, count, stride) for _ in range(3)]
        seconds = min(r[0] for r in runs)
        folios = runs[0][1]
        blocks = np.arange(folios, dtype=np.int64) * stride
        base = min(numpy_baseline(TiB, order, blocks) for _ in range(3))
        print(f"{label:<34} {folios:>10} {seconds:>9.3f} {base:>9.3f} {seconds / base:>6.2f}")
        target = "<=5" if stride > 1 else None  # issue 14: scattered folios within 5x
        record("kho", f"{label} / numpy", seconds / base, target)

    compare_formats(workloads[:2])

    print("\nkexec with nothing preserved (best of 5)\n")
    small = best_of(5, lambda: empty_kexec(16 * GiB))
    large = best_of(5, lambda: empty_kexec(TiB))
    print(f"{'16 GiB':<10} {small * 1000:>8.2f} ms")
    print(f"{'1 TiB':<10} {large * 1000:>8.2f} ms")
    print(f"{'ratio':<10} {large / small:>8.2f}")
    record("kho", "empty kexec 1 TiB / 16 GiB", large / small)


if __name__ == "__main__":
    main()
