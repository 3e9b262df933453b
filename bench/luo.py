"""LUO cost on a 1 TiB machine: the phases of an update, the blackout, and the time until
the last file is retrieved, each workload against the KHO-only baseline of the same folios
measured in the same run (`bench/kho.py`'s preserve + finalize + kexec + reserve).

Blackout, as `luoctl update` reports it: from the start of freeze until the next kernel
serves retrieval (its LUO device is open and the incoming sessions are deserialized).

Workloads: (a) 500 one-page memfds, (b) one 64 GiB memfd in 4 KiB folios, (c) one 1 TiB
memfd... on a 1 TiB machine minus scratch, so 960 GiB, in 2 MiB folios, a few pages
written. The kernel is 7.2.0, whose memfd record (memfd-v2) is dense: prepare fills every
hole, so (b) and (c) hand over every folio of their size (bench/formats.py compares that
with the sparse-aware memfd-v3). Not a test; prints a table.
Run: `.venv/bin/python bench/luo.py`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import kho  # bench/kho.py, beside this file
from _summary import record

from luod.hw.machine import Machine
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.memfd.file import MemfdFile

GiB = 1 << 30
TiB = 1 << 40


DENSE = resolve("7.2.0")


def setup_small(kernel: Kernel) -> list[MemfdFile]:
    luo = kernel.liveupdate()
    session = luo.create_session("bench")
    memfds = []
    for token in range(500):
        memfd = kernel.file(kernel.memfd_create(f"m{token}"))
        assert isinstance(memfd, MemfdFile)
        memfd.write(0, token.to_bytes(4, "little") * 1024)
        luo.preserve(session, token, memfd)
        memfds.append(memfd)
    return memfds


def setup_big(size: int, order: int) -> Callable[[Kernel], list[MemfdFile]]:
    def setup(kernel: Kernel) -> list[MemfdFile]:
        luo = kernel.liveupdate()
        memfd = kernel.file(kernel.memfd_create("big", folio_order=order))
        assert isinstance(memfd, MemfdFile)
        memfd.truncate(size)
        for i in range(8):  # a few pages written, spread out
            memfd.write(i * (size // 8), b"sparse page %d" % i)
        luo.preserve(luo.create_session("bench"), 1, memfd)
        return [memfd]

    return setup


def run(setup: Callable[[Kernel], list[MemfdFile]]) -> tuple[dict[str, float], int]:
    machine = Machine.create(TiB)
    try:
        kernel = Kernel.cold_boot(machine, DENSE, BootConfig())
        t = time.perf_counter()
        memfds = setup(kernel)
        phases = {"preserve": time.perf_counter() - t}
        gc.collect()

        def timed(name: str, fn: Callable[[], object]) -> object:
            start = time.perf_counter()
            result = fn()
            phases[name] = time.perf_counter() - start
            return result

        timed("prepare", kernel.prepare)
        folios = sum(m.populated_folios() for m in memfds)  # holes filled at prepare
        timed("freeze", kernel.freeze)
        nxt = timed("kexec", kernel.kexec)
        assert isinstance(nxt, Kernel)
        luo = nxt.liveupdate()
        timed("restore", luo.open_device)

        def retrieve_all() -> None:
            session = luo.retrieve_session("bench")
            for f in list(session.files):
                luo.retrieve_file(session, f.token)

        timed("retrieve", retrieve_all)
        phases["blackout"] = phases["freeze"] + phases["kexec"] + phases["restore"]
        phases["last file"] = phases["blackout"] + phases["retrieve"]
        return phases, folios
    finally:
        machine.close()


def main() -> None:
    workloads = [
        ("(a) 500 one-page memfds", setup_small, 0),
        ("(b) 64 GiB memfd, 4 KiB folios", setup_big(64 * GiB, 0), 0),
        ("(c) 960 GiB memfd, 2 MiB folios", setup_big(960 * GiB, 9), 9),
    ]
    cols = [
        "preserve",
        "prepare",
        "freeze",
        "kexec",
        "restore",
        "retrieve",
        "blackout",
        "last file",
    ]
    print("LUO on a 1 TiB machine, milliseconds (best of 3); ratio = blackout / KHO baseline\n")
    print(f"{'workload':<34}" + "".join(f"{c:>10}" for c in cols) + f"{'KHO':>9}{'ratio':>7}")
    for label, setup, order in workloads:
        results = [run(setup) for _ in range(3)]
        best = {c: min(r[0][c] for r in results) for c in cols}
        folios = results[0][1]
        base = min(kho.preserve_and_kexec(TiB, order, folios, image=DENSE)[0] for _ in range(3))
        row = "".join(f"{best[c] * 1000:>10.1f}" for c in cols)
        print(f"{label:<34}{row}{base * 1000:>9.1f}{best['blackout'] / base:>7.2f}")
        record("luo", f"{label}: blackout / KHO", best["blackout"] / base)


if __name__ == "__main__":
    main()
