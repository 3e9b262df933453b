"""Load: hundreds of concurrent clients creating, preserving and closing sessions while
updates run, against a real `luod`; throughput, p50/p99 latency per operation, refusals,
failures and lost objects.

Each client holds one connection and loops: `session.create`, `memfd.preserve` (a 4 KiB
memfd whose bytes derive from the session's name), `session.close`. Meanwhile an updater
runs `update` back to back (into the running release), each as soon as the machine is
back to normal. During an update the daemon refuses mutations with EBUSY: a correct
answer, counted as a refusal; the client backs off a few milliseconds and retries the same
step. A kexec ends userspace, so each update drops every client connection: the client
reconnects, retrieves its session by name if it was handed over (comparing every byte of
its memfd when the preserve had been acknowledged), finishes it and goes on. Anything else
is a failure: another error, a session that was preserved and did not come back, bytes
that differ, a session left behind at the end.

Clients run in `--processes` worker processes (trio, `--clients` connections in all); the
parent starts `luod` (unless `--socket` names a running one, which must allow this uid
more than `--clients` connections: `--max-connections-per-uid`), runs the updater, merges the
workers' figures and prints them. `--json` prints one JSON document instead of the table.
Exit status 1 when anything failed or was lost (the test suite runs a small version).

Run: `.venv/bin/python bench/load.py [--clients 200] [--seconds 20] [--processes 1]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import attrs
import trio
from _summary import record  # bench/_summary.py, beside this file

from luod.ipc.async_client import TrioClient, open_client
from luod.ipc.errors import ConnectionLost, RemoteError

BIN = Path(sys.executable).parent
DATA_SIZE = 4096
OPS = ("create", "preserve", "close", "retrieve", "verify", "finish")
DRAIN_SECONDS = 60.0  # after the run: every client completes its cycle within this


def data_for(name: str) -> bytes:
    return (hashlib.sha256(name.encode()).digest() * (DATA_SIZE // 32))[:DATA_SIZE]


@attrs.define
class Stats:
    latencies: dict[str, list[float]] = attrs.field(factory=lambda: defaultdict(list))
    refusals: Counter[str] = attrs.field(factory=Counter)
    failures: list[str] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    reconnects: int = 0
    recovered: int = 0  # sessions taken back after a kexec, bytes verified
    cycles: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "latencies": dict(self.latencies),
            "refusals": dict(self.refusals),
            "failures": self.failures,
            "lost": self.lost,
            "reconnects": self.reconnects,
            "recovered": self.recovered,
            "cycles": self.cycles,
        }

    def merge(self, doc: dict[str, Any]) -> None:
        for op, values in doc["latencies"].items():
            self.latencies[op] += values
        self.refusals.update(doc["refusals"])
        self.failures += doc["failures"]
        self.lost += doc["lost"]
        self.reconnects += doc["reconnects"]
        self.recovered += doc["recovered"]
        self.cycles += doc["cycles"]


class Refused(Exception):
    """EBUSY: the daemon is in an update; retry the same step."""


@attrs.define
class Worker:
    """One client: one session at a time, through create, preserve and close."""

    path: str
    name: str
    stats: Stats
    stop_at: float
    cycle: int = 0
    session: str | None = None
    # what the daemon is known to have done (acknowledged) for `session`
    created: bool = False
    preserved: bool = False
    closing: bool = False  # a close was sent: if the reply is lost, either outcome is right

    async def call(self, client: TrioClient, op: str, method: str, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            reply = await client.call(method, kw.pop("params", {}), **kw)
        except RemoteError as exc:
            if exc.errno == "EBUSY":
                self.stats.refusals[op] += 1
                raise Refused from None
            raise
        self.stats.latencies[op].append((time.perf_counter() - t) * 1000)
        return reply

    async def run(self) -> None:
        rng = random.Random(self.name)
        while True:
            try:
                async with open_client(self.path, self.name) as client:
                    await self.recover(client)
                    while self.session is not None or trio.current_time() < self.stop_at:
                        try:
                            await self.step(client)
                        except Refused:
                            await trio.sleep(rng.uniform(0.001, 0.005))
                    return
            except ConnectionLost:
                self.stats.reconnects += 1
            except (OSError, trio.BrokenResourceError):
                # the listen backlog was full while everyone reconnected: try again
                self.stats.reconnects += 1
                await trio.sleep(rng.uniform(0.005, 0.02))
            except RemoteError as exc:
                self.fail(f"{exc.name} {exc.errno}: {exc.message}")
                return

    def fail(self, what: str) -> None:
        self.stats.failures.append(f"{self.name} {self.session}: {what}")
        self.session, self.created, self.preserved, self.closing = None, False, False, False

    async def step(self, client: TrioClient) -> None:
        if self.session is None:
            if trio.current_time() >= self.stop_at:
                return
            self.cycle += 1
            self.session = f"{self.name}-{self.cycle}"
        name = self.session
        if not self.created:
            await self.call(client, "create", "session.create", params={"name": name})
            self.created = True
        elif not self.preserved:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            try:
                os.write(fd, data_for(name))
                params = {"session": name, "token": 1}
                await self.call(client, "preserve", "memfd.preserve", params=params, fds=[fd])
            finally:
                os.close(fd)
            self.preserved = True
        else:
            self.closing = True
            await self.call(client, "close", "session.close", params={"name": name})
            self.done()

    def done(self) -> None:
        self.session, self.created, self.preserved, self.closing = None, False, False, False
        self.stats.cycles += 1

    async def recover(self, client: TrioClient) -> None:
        """After a reconnect: take back the session the kexec handed over, if any."""
        name = self.session
        if name is None:
            return
        try:
            await self.call(client, "retrieve", "session.retrieve", params={"name": name})
        except RemoteError as exc:
            if exc.errno != "ENOENT":
                raise
            outgoing = await self.outgoing(client, name)
            if outgoing is not None:
                # No kexec happened to it (the connection went for another reason): carry
                # on where the cycle was, with what the daemon says it holds.
                self.created, self.preserved = True, bool(outgoing["files"])
                self.closing = False
                return
            if self.created and not self.closing:
                # acknowledged and never closed: it must have come back
                self.stats.lost.append(f"{name}: {exc.message}")
            self.done()
            return
        try:
            reply = await self.call(
                client, "verify", "memfd.retrieve", params={"session": name, "token": 1}
            )
        except RemoteError as exc:
            if self.preserved or exc.errno != "ENOENT":
                self.stats.lost.append(f"{name}/1: {exc.name}: {exc.message}")
        else:
            (fd,) = reply.fds
            try:
                if os.pread(fd, DATA_SIZE + 1, 0) != data_for(name):
                    self.stats.failures.append(f"{name}/1: the bytes differ")
            finally:
                os.close(fd)
            self.stats.recovered += 1
        await self.call(client, "finish", "session.finish", params={"name": name})
        self.done()

    async def outgoing(self, client: TrioClient, name: str) -> dict[str, Any] | None:
        sessions = (await client.call("session.list")).result["sessions"]
        return next(
            (s for s in sessions if s["name"] == name and s["direction"] == "outgoing"), None
        )


async def run_workers(path: str, prefix: str, count: int, seconds: float) -> Stats:
    stats = Stats()
    stop_at = trio.current_time() + seconds
    with trio.move_on_after(seconds + DRAIN_SECONDS) as scope:
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(Worker(path, f"{prefix}{i}", stats, stop_at).run)
    if scope.cancelled_caught:
        stats.failures.append(f"clients did not finish their cycle within {DRAIN_SECONDS} s")
    return stats


# -- the parent: luod, the updater, the workers ---------------------------------------------


@attrs.define
class Updates:
    done: int = 0
    refused: Counter[str] = attrs.field(factory=Counter)
    blackout_ms: list[float] = attrs.field(factory=list)
    damage: list[Any] = attrs.field(factory=list)


async def updater(path: str, seconds: float, interval: float, updates: Updates) -> None:
    """Update every `interval` seconds (0: back to back) while the clients run."""
    async with open_client(path, "load-updater") as client:
        release = (await client.call("status")).result["kernel"]["release"]
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            if (await client.call("status")).result["state"] != "normal":
                await trio.sleep(0.005)  # clients still finishing what was handed over
                continue
            try:
                result = (await client.call("update", {"target": release})).result
            except RemoteError as exc:
                # prepare needs NORMAL: a session handed over by the last update may be
                # unfinished still (the status above raced with it)
                updates.refused[f"{exc.name} {exc.errno}"] += 1
                await trio.sleep(0.005)
                continue
            updates.done += 1
            updates.blackout_ms.append(result["blackout_ms"])
            updates.damage += result["damage"]
            await trio.sleep(max(0.0, min(interval, end - trio.current_time())))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def final_check(path: str, stats: Stats) -> dict[str, Any]:
    async with open_client(path, "load-check") as client:
        status: dict[str, Any] = (await client.call("status")).result
    left = [s["name"] for s in status["sessions"]]
    if left:
        stats.failures.append(f"{len(left)} session(s) left behind: {left[:5]}")
    if status["state"] != "normal":
        stats.failures.append(f"state is {status['state']} at the end")
    return status


def start_luod(workdir: Path, clients: int) -> tuple[subprocess.Popen[bytes], str]:
    sock = workdir / "luod.sock"
    proc = subprocess.Popen(
        [
            *(str(BIN / "luod"), "--socket", str(sock), "--ram", "16G", "--log-level", "warning"),
            # every client is this uid, and reconnects after each kexec: lift the cap (64)
            *("--max-connections-per-uid", str(2 * clients + 16)),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("luod did not start")
        time.sleep(0.01)
    return proc, str(sock)


def report(doc: dict[str, Any]) -> None:
    print(
        f"{doc['clients']} clients in {doc['processes']} process(es), {doc['seconds']:g} s, "
        f"{doc['updates']} updates, one every {doc['interval']:g} s "
        f"(median blackout {doc['update_blackout_ms_p50']:.1f} ms)"
    )
    print(f"throughput: {doc['ops_per_s']:.0f} ops/s, {doc['cycles_per_s']:.0f} cycles/s")
    print(f"{'op':<10}{'count':>9}{'p50 ms':>9}{'p99 ms':>9}{'EBUSY':>9}")
    for op, row in doc["ops"].items():
        print(
            f"{op:<10}{row['count']:>9}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['ebusy']:>9}"
        )
    print(
        f"reconnects {doc['reconnects']}, sessions taken back after a kexec "
        f"{doc['recovered']}, update refusals {doc['update_refusals']}"
    )
    print(f"daemon RSS: {doc['rss_kib_start']} KiB at start, {doc['rss_kib_end']} KiB at the end")
    print(f"failures: {len(doc['failures'])}, lost objects: {len(doc['lost'])}")
    for line in (doc["failures"] + doc["lost"])[:10]:
        print(f"  {line}")


def parent(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="luod-load-"))
    proc = None
    try:
        if args.socket:
            path, pid = args.socket, None
        else:
            proc, path = start_luod(workdir, args.clients)
            pid = proc.pid
        rss_start = rss_kib(pid) if pid else 0
        per = [args.clients // args.processes] * args.processes
        per[0] += args.clients - sum(per)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"p{n}c",
                    "--socket",
                    path,
                    "--clients",
                    str(count),
                    "--seconds",
                    str(args.seconds),
                ],
                stdout=subprocess.PIPE,
            )
            for n, count in enumerate(per)
        ]
        updates = Updates()
        started = time.perf_counter()
        trio.run(updater, path, args.seconds, args.interval, updates)
        stats = Stats()
        for worker in workers:
            out, _ = worker.communicate(timeout=args.seconds + DRAIN_SECONDS + 30)
            if worker.returncode != 0:
                stats.failures.append(f"a worker process exited {worker.returncode}")
            else:
                stats.merge(json.loads(out))
        elapsed = time.perf_counter() - started
        trio.run(final_check, path, stats)
        rss_end = rss_kib(pid) if pid else 0
        ops = {
            op: {
                "count": len(stats.latencies.get(op, [])),
                "p50_ms": round(percentile(stats.latencies.get(op, []), 0.50), 3),
                "p99_ms": round(percentile(stats.latencies.get(op, []), 0.99), 3),
                "ebusy": stats.refusals.get(op, 0),
            }
            for op in OPS
        }
        total = sum(len(v) for v in stats.latencies.values())
        doc = {
            "clients": args.clients,
            "processes": args.processes,
            "interval": args.interval,
            "seconds": round(elapsed, 3),
            "updates": updates.done,
            "update_refusals": dict(updates.refused),
            "update_blackout_ms_p50": percentile(updates.blackout_ms, 0.5),
            "ops_per_s": total / elapsed,
            "cycles_per_s": stats.cycles / elapsed,
            "cycles": stats.cycles,
            "ops": ops,
            "refusals": sum(stats.refusals.values()),
            "reconnects": stats.reconnects,
            "recovered": stats.recovered,
            "failures": stats.failures + [f"update damage: {d}" for d in updates.damage],
            "lost": stats.lost,
            "rss_kib_start": rss_start,
            "rss_kib_end": rss_end,
        }
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            report(doc)
            record("load", "throughput", doc["ops_per_s"], unit=" ops/s")
            record("load", "update blackout p50", doc["update_blackout_ms_p50"], unit=" ms")
            record("load", "failures + lost", len(doc["failures"]) + len(doc["lost"]), "<=0", "")
        return 1 if doc["failures"] or doc["lost"] else 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="client connections (200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to run (20)")
    parser.add_argument("--processes", type=int, default=1, help="client processes (1)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between updates (1; 0: no pause)"
    )
    parser.add_argument("--socket", help="a running luod's socket (default: start one)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--worker", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        stats = trio.run(run_workers, args.socket, args.worker, args.clients, args.seconds)
        print(json.dumps(stats.as_json()))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
