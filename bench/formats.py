"""Dense against sparse-aware memfd records: a 1 TiB memfd with 1 GiB written.

The memfd is a cache: 512 hot regions of 2 MiB, one every 2 GiB, the rest never touched.
Both runs use release 7.3.0 (kho-v2, luo-v2); the dense one has memfd-v3 switched off
(`luoctl kernel write memfd-v3 off`), so negotiation falls back to memfd-v2. Measured:
- record: the bytes of the memfd's record (header and entry table) the next kernel reads;
- folios: what KHO preserves for the file, hence what the next kernel must reserve;
- prepare: where dense records fill every hole (frames assigned, nothing written);
- blackout: freeze + kexec + the next kernel opening its LUO device, as `luoctl update`
  reports it;
- retrieve: the next kernel rebuilding the memfd from its record; usable = blackout +
  retrieve, when the VMM has its cache back;
- resident: RAM the retrieved memfd holds (under memfd-v3 its holes stay holes; a dense
  record makes every hole a real zeroed page in Linux, a frame in this model).

Folio size: 2 MiB folios keep the dense record of a 1 TiB file at 512K entries (8 MiB),
which this 24 GiB machine holds with room to spare. In 4 KiB folios the same file has 256M
folios: a 4 GiB dense record, plus several GiB of per-folio arrays on each side, more than
the host can spare; the 4 KiB rows therefore use a 64 GiB memfd with 64 MiB written (the
same 1/1024 density and layout), whose dense record is 1/16 of the 1 TiB one.

Not a test; prints a table, ratios taken within this run (best of 3 per cell).
Run: `.venv/bin/python bench/formats.py`.
"""

from __future__ import annotations

import gc
import time

import attrs
from _summary import record  # bench/_summary.py, beside this file

from luod.hw.machine import Machine
from luod.kernel_model.images import KernelImage, resolve
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.handler import MemfdHandler
from luod.kernel_model.memfd.records import EXTENT_BYTES, HEADER_V2, HEADER_V3

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
REGION = 2 * MiB
STRIDE = 2 * GiB
RUNS = 3


def image(memfd_format: str) -> KernelImage:
    """7.3.0, with memfd-v3 switched off for the dense run (as an operator would)."""
    base = resolve("7.3.0")
    if memfd_format == "memfd-v3":
        return base
    return attrs.evolve(base, write_switches=(("memfd-v3", False),))


@attrs.frozen
class Result:
    memfd_format: str
    record: int
    folios: int
    prepare: float
    blackout: float
    retrieve: float
    resident: int


def run(size: int, order: int, memfd_format: str) -> Result:
    machine = Machine.create(size + 16 * GiB)
    try:
        kernel = Kernel.cold_boot(machine, image(memfd_format), BootConfig())
        luo = kernel.liveupdate()
        memfd = kernel.file(kernel.memfd_create("cache", folio_order=order))
        assert isinstance(memfd, MemfdFile)
        memfd.truncate(size)
        hot = bytes(range(256)) * (REGION // 256)
        for offset in range(0, size, STRIDE):
            memfd.write(offset, hot)
        luo.preserve(luo.create_session("cache"), 1, memfd)
        gc.collect()
        t = time.perf_counter()
        kernel.prepare()
        prepare = time.perf_counter() - t
        assert luo.formats["memfd"] == memfd_format
        f = luo.outgoing["cache"].files[0]
        assert f.data is not None
        handler = luo.handler_for_type("memfd")
        assert isinstance(handler, MemfdHandler)
        fields = handler.parse_header(memfd_format, kernel.memory.read_at(f.data, 64))
        if memfd_format == "memfd-v3":
            record = HEADER_V3.size + fields["nr"] * EXTENT_BYTES
        else:
            record = HEADER_V2.size + fields["nr"] * 16
        folios = memfd.populated_folios()
        t = time.perf_counter()
        kernel.freeze()
        nxt = kernel.kexec()
        nluo = nxt.liveupdate()
        nluo.open_device()
        blackout = time.perf_counter() - t
        t = time.perf_counter()
        got = nluo.retrieve_file(nluo.retrieve_session("cache"), 1)
        retrieve = time.perf_counter() - t
        assert isinstance(got, MemfdFile) and got.size == size
        assert got.read(STRIDE, 4096) == hot[:4096] and got.read(REGION, 4096) == bytes(4096)
        return Result(
            memfd_format, record, folios, prepare, blackout, retrieve, got.resident_bytes()
        )
    finally:
        machine.close()


def best(size: int, order: int, memfd_format: str) -> Result:
    results = [run(size, order, memfd_format) for _ in range(RUNS)]
    return Result(
        memfd_format,
        results[0].record,
        results[0].folios,
        min(r.prepare for r in results),
        min(r.blackout for r in results),
        min(r.retrieve for r in results),
        results[0].resident,
    )


def human(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (1024, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} B"


def main() -> None:
    cases = [
        ("1 TiB, 2 MiB folios", TiB, 9),
        ("64 GiB, 4 KiB folios", 64 * GiB, 0),
    ]
    print("memfd with 1/1024 written (2 MiB regions every 2 GiB), release 7.3.0;")
    print("dense = memfd-v2 (memfd-v3 switched off), sparse = memfd-v3; best of 3\n")
    head = (
        f"{'memfd':<22}{'format':<10}{'record':>11}{'folios':>10}{'prepare':>11}"
        f"{'blackout':>11}{'retrieve':>11}{'usable':>11}{'resident':>12}"
    )
    print(head)
    ratios = []
    for label, size, order in cases:
        dense = best(size, order, "memfd-v2")
        sparse = best(size, order, "memfd-v3")
        for r in (dense, sparse):
            usable = r.blackout + r.retrieve
            print(
                f"{label:<22}{r.memfd_format:<10}{human(r.record):>11}{r.folios:>10}"
                f"{r.prepare * 1000:>9.1f}ms{r.blackout * 1000:>9.1f}ms"
                f"{r.retrieve * 1000:>9.1f}ms{usable * 1000:>9.1f}ms{human(r.resident):>12}"
            )
        ratios.append((label, dense, sparse))
    print("\nsparse / dense:")
    for label, dense, sparse in ratios:
        usable = (sparse.blackout + sparse.retrieve) / (dense.blackout + dense.retrieve)
        print(
            f"  {label:<22} record {sparse.record / dense.record:.2e}, "
            f"blackout {sparse.blackout / dense.blackout:.3f}, "
            f"usable {usable:.3f}, "
            f"prepare {sparse.prepare / dense.prepare:.3f}, "
            f"resident {sparse.resident / dense.resident:.2e}"
        )
        record("formats", f"{label}: sparse / dense usable", usable)
        record("formats", f"{label}: sparse / dense blackout", sparse.blackout / dense.blackout)


if __name__ == "__main__":
    main()
