"""Soak: consecutive update cycles on one `luod`, each verified; the daemon's memory at
cycle 1, cycle 10 and the last.

One cycle: `luod-vmm run vm --memory SIZE` (guest RAM with a pattern, an iommufd, a
vfio-pci device doing DMA, a participant), plus `--memfds` sessions each holding a memfd
of fresh random bytes, preserved through the socket; `update` into the running release;
`luod-vmm resume vm --json` must verify every byte of guest memory and DMA without a fault;
every memfd is retrieved and compared byte for byte and its session finished; the machine
must be back to normal with nothing left over. The daemon's resident memory (VmRSS) is
read after every cycle: the soak passes when every cycle verified and the last cycle's is
within 10% of cycle 10's (cycle 1 pays for warming up: imports, caches, first allocations).

Prints per-cycle figures every 10 cycles, then: cycles per minute, p50/p99 of the
blackout, the full blackout (until the VMM resumed), the whole cycle, and the memory.
`--json` prints one JSON document instead. Exit status 1 when a cycle failed or memory
grew past the bound. The test suite runs 3 cycles; `make test-slow` runs 100.

Run: `.venv/bin/python bench/soak.py [--cycles 100] [--memory 64M] [--memfds 4]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
from _summary import record  # bench/_summary.py, beside this file

from luod.ipc.client import Client
from luod.ipc.errors import RemoteError

BIN = Path(sys.executable).parent
VMM = "vm"
GROWTH_BOUND = 0.10  # memory at the last cycle vs cycle 10
WARM_CYCLE = 10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def wait_for(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise CycleFailed(f"timed out waiting for {what}")
        time.sleep(0.01)


class CycleFailed(Exception):
    pass


@attrs.define
class Cycle:
    n: int
    seconds: float
    blackout_ms: float
    full_blackout_ms: float
    bytes_checked: int
    dma_writes_during_blackout: int
    rss_kib: int


class Soak:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.socket = workdir / "luod.sock"
        self.luod = subprocess.Popen(
            [
                str(BIN / "luod"),
                "--socket",
                str(self.socket),
                "--ram",
                "16G",
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.accepts, "luod to accept", 60)
        self.rng = random.Random(1)
        with self.client() as c:
            self.release = c.call("status").result["kernel"]["release"]

    def accepts(self) -> bool:
        if self.luod.poll() is not None:
            raise CycleFailed("luod exited")
        try:
            self.client().close()
        except ConnectionError:
            return False
        return True

    def client(self) -> Client:
        return Client.connect(self.socket, timeout=120, client_name="bench/soak")

    def vmm(self, *args: str) -> list[str]:
        return [str(BIN / "luod-vmm"), "--socket", str(self.socket), *args]

    def participant_ready(self, c: Client) -> bool:
        status = c.call("status").result
        return any(p["name"] == VMM and p["state"] == "ready" for p in status["participants"])

    def cycle(self, n: int) -> Cycle:
        started = time.perf_counter()
        log = (self.workdir / "vmm.log").open("wb")
        run = subprocess.Popen(
            self.vmm("run", VMM, "--memory", self.args.memory),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with self.client() as c:

                def ready() -> bool:
                    if run.poll() is not None:
                        raise CycleFailed(f"luod-vmm run exited {run.returncode}")
                    return self.participant_ready(c)

                wait_for(ready, "the VMM to be ready")
                memfds = self.preserve_memfds(c, n)
                result = c.call("update", {"target": self.release}).result
                if result["damage"]:
                    raise CycleFailed(f"damage: {result['damage']}")
            if run.wait(timeout=60) != 0:
                raise CycleFailed(f"luod-vmm run exited {run.returncode} after the kexec")
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            log.close()
        resumed = subprocess.run(
            self.vmm("resume", VMM, "--json"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        report = json.loads(resumed.stdout or "{}")
        if resumed.returncode != 0 or not report.get("verified"):
            raise CycleFailed(f"resume did not verify: {report.get('problems') or resumed.stderr}")
        if report["dma_faults"]:
            raise CycleFailed(f"{report['dma_faults']} DMA faults")
        with self.client() as c:
            self.verify_memfds(c, memfds)
            status = c.call("status").result
        if status["state"] != "normal" or status["sessions"]:
            raise CycleFailed(f"left over: state {status['state']}, {status['sessions']}")
        record = status["last_update"]
        return Cycle(
            n,
            time.perf_counter() - started,
            record["blackout_ms"],
            record["full_blackout_ms"],
            report["bytes_checked"],
            report["dma_writes_during_blackout"],
            rss_kib(self.luod.pid),
        )

    def preserve_memfds(self, c: Client, n: int) -> dict[str, bytes]:
        memfds = {}
        for i in range(self.args.memfds):
            name = f"m{i}"
            data = self.rng.randbytes(self.rng.randrange(1, 256 << 10))
            c.call("session.create", {"name": name})
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            try:
                os.write(fd, data)
                c.call("memfd.preserve", {"session": name, "token": 1}, fds=[fd])
            finally:
                os.close(fd)
            memfds[name] = data
        return memfds

    def verify_memfds(self, c: Client, memfds: dict[str, bytes]) -> None:
        for name, data in memfds.items():
            c.call("session.retrieve", {"name": name})
            reply = c.call("memfd.retrieve", {"session": name, "token": 1})
            (fd,) = reply.fds
            try:
                if os.pread(fd, len(data) + 1, 0) != data:
                    raise CycleFailed(f"memfd {name}: the bytes differ")
            finally:
                os.close(fd)
            c.call("session.finish", {"name": name})

    def stop(self) -> None:
        self.luod.terminate()
        self.luod.wait(60)


def summary(cycles: list[Cycle], failure: str | None, wall: float) -> dict[str, Any]:
    rss = {c.n: c.rss_kib for c in cycles}
    last = cycles[-1].n if cycles else 0
    warm = rss.get(WARM_CYCLE)
    growth = (rss[last] - warm) / warm if warm and last > WARM_CYCLE else None
    return {
        "cycles": len(cycles),
        "failure": failure,
        "cycles_per_min": 60 * len(cycles) / wall if wall else 0.0,
        "blackout_ms": {
            "p50": percentile([c.blackout_ms for c in cycles], 0.5),
            "p99": percentile([c.blackout_ms for c in cycles], 0.99),
        },
        "full_blackout_ms": {
            "p50": percentile([c.full_blackout_ms for c in cycles], 0.5),
            "p99": percentile([c.full_blackout_ms for c in cycles], 0.99),
        },
        "cycle_s": {
            "p50": percentile([c.seconds for c in cycles], 0.5),
            "p99": percentile([c.seconds for c in cycles], 0.99),
        },
        "bytes_verified": sum(c.bytes_checked for c in cycles),
        "rss_kib": {"1": rss.get(1), str(WARM_CYCLE): warm, str(last): rss.get(last)},
        "growth_since_cycle_10": growth,
        "per_cycle": [attrs.asdict(c) for c in cycles],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="update cycles (100)")
    parser.add_argument("--memory", default="64M", help="the VMM's guest memory (64M)")
    parser.add_argument("--memfds", type=int, default=4, help="memfd sessions per cycle (4)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="luod-soak-"))
    cycles: list[Cycle] = []
    failure = None
    started = time.perf_counter()
    soak = Soak(workdir, args)
    try:
        for n in range(1, args.cycles + 1):
            try:
                cycles.append(soak.cycle(n))
            except (CycleFailed, RemoteError, OSError, ValueError) as exc:
                failure = f"cycle {n}: {exc}"
                break
            c = cycles[-1]
            if not args.json and (n == 1 or n % 10 == 0):
                print(
                    f"cycle {n:>4}: {c.seconds:6.2f} s, blackout {c.blackout_ms:7.1f} ms, "
                    f"full {c.full_blackout_ms:7.1f} ms, DMA during blackout "
                    f"{c.dma_writes_during_blackout}, luod RSS {c.rss_kib} KiB",
                    flush=True,
                )
    finally:
        soak.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    doc = summary(cycles, failure, time.perf_counter() - started)
    growth = doc["growth_since_cycle_10"]
    if failure is None and growth is not None and growth > GROWTH_BOUND:
        failure = f"luod's memory grew {growth:.1%} from cycle {WARM_CYCLE} to the last"
        doc["failure"] = failure
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        rss = doc["rss_kib"]
        print(
            f"{doc['cycles']} cycles verified ({doc['cycles_per_min']:.1f}/min, "
            f"{doc['bytes_verified'] / (1 << 30):.2f} GiB of guest memory checked)"
        )
        for key, label in (
            ("blackout_ms", "blackout ms"),
            ("full_blackout_ms", "full blackout ms"),
            ("cycle_s", "cycle s"),
        ):
            print(f"{label:<18} p50 {doc[key]['p50']:8.2f}   p99 {doc[key]['p99']:8.2f}")
        print(
            "luod RSS KiB: "
            + ", ".join(f"cycle {k}: {v}" for k, v in rss.items() if v)
            + (f" ({growth:+.1%} since cycle {WARM_CYCLE})" if growth is not None else "")
        )
        print(f"result: {failure or 'ok'}")
        record("soak", "blackout p50", doc["blackout_ms"]["p50"], unit=" ms")
        if growth is not None:
            record("soak", "RSS growth since cycle 10", growth, f"<={GROWTH_BOUND}", "")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
