"""What devices add to the blackout: `luod-vmm` against a memfd-only baseline, same run.

Two guests, both `--sparse` (one 4 KiB page written in every 512, the rest holes):
(a) 64 GiB of RAM in 2 MiB pages with 4 vfio-pci devices doing DMA, at luod-vmm's default
rate of 100k records/s per device and at 1M/s; (b) 1 TiB in 1 GiB pages with 4 devices.
Each is measured against its baseline: a memfd object of the same size, page size and
sparse pattern preserved alone (no participant, no iommufd, no devices) and updated the
same way. Blackout is the update's own `blackout_ms` (from the start of freeze until the
next kernel serves retrieval) and `status.last_update.blackout_ms`, the daemon's record of
the same update. Aim: devices add less than 20%.

Real processes: each sample boots a fresh `luod` (`--ram 1200G --hugetlb
2M=33000,1G=1100`: emulated RAM is sparse and costs only what is written, 2 GiB of pattern
for the 1 TiB guest), so every update is the first on its machine (the next kernel's
hugetlb pools are sized without regard to the huge pages it adopts, so a second update on
one daemon would measure a different machine); after each VMM update `luod-vmm resume
--json` verifies every byte (and is timed). Samples alternate baseline and VMM so load on
the machine hits both alike; the table shows the best of N (as bench/luo.py does: the
1 TiB kexec alone varies by 15% between runs), setup and verification times the median.

Not a test; prints its table row by row as each guest is measured, and records the
ratios for `make bench`'s summary (bench/_summary.py). `--quick` measures only the 64 GiB
guest at 100k records/s, best of 5 (under 3 minutes; on the development VM one blackout in
two or three takes two to three times as long, so two samples were not enough);
`--profile DIR` runs each luod under cProfile and leaves one .prof file per daemon in DIR.
Run: `.venv/bin/python bench/vmm.py [--quick] [--runs N] [--profile DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from _summary import record  # bench/_summary.py, beside this file

from luod.ipc.client import Client
from luod.units import format_size
from luod_vmm.guestmem import pattern_memfd
from luod_vmm.options import DEFAULT_DMA_RATE, VmmOptions
from luod_vmm.pattern import ram_pattern

BIN = Path(sys.executable).parent
TARGET = "7.1.0"
DEVICES = 4
LUOD_ARGS = ["--kernel", TARGET, "--ram", "1200G", "--hugetlb", "2M=33000,1G=1100"]
LONG = 600.0  # seconds: a 1 TiB guest takes a while to build and verify


@attrs.frozen
class Workload:
    label: str
    memory: int
    page_size: int
    dma_rate: int = DEFAULT_DMA_RATE


WORKLOADS = [
    Workload("64G/2M, DMA 100k/s", 64 << 30, 2 << 20),
    Workload("64G/2M, DMA 1M/s", 64 << 30, 2 << 20, 1_000_000),
    Workload("1T/1G, DMA 100k/s", 1 << 40, 1 << 30),
]


@attrs.define
class Sample:
    blackout_ms: float  # the update's own
    record_ms: float  # status.last_update.blackout_ms
    dma_during: int = 0
    setup_s: float = 0.0
    verify_s: float = 0.0
    full_ms: float | None = None


def wait_for(check: Callable[[], bool], what: str, timeout: float = LONG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Daemon:
    def __init__(self, workdir: Path, profile: Path | None = None) -> None:
        self.socket = workdir / "luod.sock"
        command = [str(BIN / "luod")]
        if profile is not None:  # SIGTERM ends luod cleanly, so cProfile writes its file
            command = [sys.executable, "-m", "cProfile", "-o", str(profile), command[0]]
        self.proc = subprocess.Popen(
            [*command, "--socket", str(self.socket), "--log-level", "warning", *LUOD_ARGS],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.accepts, "luod to accept", 60)

    def accepts(self) -> bool:
        assert self.proc.poll() is None, "luod exited"
        try:
            self.client().close()
        except ConnectionError:
            return False
        return True

    def client(self) -> Client:
        return Client.connect(self.socket, timeout=LONG, client_name="bench/vmm")

    def status(self) -> dict[str, Any]:
        with self.client() as c:
            result = c.call("status").result
        assert isinstance(result, dict)
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def update(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
    result = client.call("update", {"target": TARGET}).result
    last = client.call("status").result["last_update"]
    return result, last


def baseline(daemon: Daemon, work: Workload) -> Sample:
    """A memfd of the guest's size, page size and sparse pattern, preserved alone."""
    options = VmmOptions("base", work.memory, page_size=work.page_size, sparse=True)
    started = time.perf_counter()
    fd = pattern_memfd("base", work.memory, ram_pattern(options))
    spec = {"name": "base", "type": "memfd", "size": work.memory, "page_size": work.page_size}
    with daemon.client() as c:
        try:
            c.call("object.create", {"object": spec}, fds=[fd])
        finally:
            os.close(fd)
        c.call("session.create", {"name": "base"})
        c.call("object.preserve", {"session": "base", "token": 1, "name": "base"})
        setup = time.perf_counter() - started
        result, last = update(c)
    return Sample(result["blackout_ms"], last["blackout_ms"], setup_s=setup)


def vmm(daemon: Daemon, work: Workload) -> Sample:
    """`luod-vmm run` with 4 devices; update; `luod-vmm resume --json`."""
    cli = [str(BIN / "luod-vmm"), "--socket", str(daemon.socket)]
    started = time.perf_counter()
    shape = ["--memory", format_size(work.memory), "--page-size", format_size(work.page_size)]
    shape += ["--vfio", str(DEVICES), "--dma-rate", str(work.dma_rate), "--sparse"]
    log = daemon.socket.parent / "vmm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cli, "run", "vm", *shape],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        assert proc.poll() is None, f"luod-vmm run exited early: {log.read_text()}"
        return any(p["state"] == "ready" for p in daemon.status()["participants"])

    wait_for(ready, "luod-vmm to be ready")
    setup = time.perf_counter() - started
    with daemon.client() as c:
        result, last = update(c)
    if proc.wait(60) != 0:
        raise SystemExit(f"luod-vmm run exited {proc.returncode}: {log.read_text()}")
    started = time.perf_counter()
    resumed = subprocess.run(
        [*cli, "resume", "vm", "--json"], capture_output=True, text=True, check=False
    )
    verify = time.perf_counter() - started
    report = json.loads(resumed.stdout)
    if not report["verified"]:
        raise SystemExit(f"luod-vmm resume did not verify: {report['problems']}")
    full = daemon.status()["last_update"].get("full_blackout_ms")
    return Sample(
        result["blackout_ms"],
        last["blackout_ms"],
        report["dma_writes_during_blackout"],
        setup,
        verify,
        full,
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def best(values: list[float]) -> float:
    return min(values)


HEAD = ["memfd", "VMM", "ratio", "rec memfd", "rec VMM", "ratio", "DMA in bo", "full bo"]


def row(work: Workload, base: list[Sample], dev: list[Sample]) -> str:
    b = best([s.blackout_ms for s in base])
    v = best([s.blackout_ms for s in dev])
    rb = best([s.record_ms for s in base])
    rv = best([s.record_ms for s in dev])
    during = median([float(s.dma_during) for s in dev])
    full = median([s.full_ms or 0.0 for s in dev])
    cells = [f"{b:.1f}", f"{v:.1f}", f"{v / b:.2f}", f"{rb:.1f}", f"{rv:.1f}"]
    cells += [f"{rv / rb:.2f}", f"{during:.0f}", f"{full:.0f}"]
    return f"{work.label:<20}" + "".join(f"{c:>10}" for c in cells)


def summarise(work: Workload, base: list[Sample], dev: list[Sample]) -> None:
    v = best([s.blackout_ms for s in dev])
    ratio = v / best([s.blackout_ms for s in base])
    headline = work is WORKLOADS[0]
    record("vmm", f"{work.label}: VMM blackout", v, "<25" if headline else None, " ms")
    record("vmm", f"{work.label}: VMM / memfd blackout", ratio, "<1.10" if headline else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs of each (default 3, 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="only the 64 GiB/2 MiB, 100k/s guest")
    parser.add_argument("--profile", type=Path, help="run luod under cProfile, files in DIR")
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 3)
    workloads = WORKLOADS[:1] if args.quick else WORKLOADS
    profile_dir: Path | None = args.profile
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-vmm-"))
    rows = []
    print(
        f"Blackout with {DEVICES} devices doing DMA vs a memfd-only baseline, sparse guests, "
        f"milliseconds (best of {runs}); ratio = VMM / baseline\n",
        flush=True,
    )
    print(f"{'guest':<20}" + "".join(f"{h:>10}" for h in HEAD), flush=True)
    profiles = iter(range(1 << 30))

    def profile(kind: str) -> Path | None:
        if profile_dir is None:
            return None
        return profile_dir / f"luod-{kind}-{next(profiles)}.prof"

    try:
        for work in workloads:
            base: list[Sample] = []
            dev: list[Sample] = []
            for i in range(runs):
                # Each side goes first in every other pair: whichever follows a daemon
                # that just gave its memory back finds that memory already faulted in.
                sides = [("memfd", baseline, base), ("vmm", vmm, dev)]
                for kind, measure, samples in sides if i % 2 == 0 else sides[::-1]:
                    with Daemon(workdir, profile(kind)) as daemon:
                        samples.append(measure(daemon, work))
            rows.append((work, base, dev))
            print(row(work, base, dev), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nsetup and verification, seconds (median):")
    for work, base, dev in rows:
        print(
            f"  {work.label}: memfd setup {median([s.setup_s for s in base]):.1f}, "
            f"VMM setup {median([s.setup_s for s in dev]):.1f}, "
            f"resume + verify {median([s.verify_s for s in dev]):.1f}"
        )
    for work, base, dev in rows:
        summarise(work, base, dev)


if __name__ == "__main__":
    main()
