"""luod-run: the cost of the ioctl path, and the kernel's stress cases across a kexec.

1. One ioctl round trip (GET_NAME on a session fd) under luod-run, against a bare ioctl
   on /dev/null (the syscall floor) and against the same question through the Python
   client (`session.show`), all in the same run.
2. The two-stage stress tests (tests/run/c/luo_kexec.c): 2000 sessions, and 500 files in
   one session, across `luoctl update`: stage 1, the update (its blackout), stage 2.

Not a test: prints tables. Run: `.venv/bin/python bench/run.py` (needs a C compiler).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _summary import record  # bench/_summary.py, beside this file

from luod.ipc.client import Client
from luod_run.build import compiler, interposer

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 20000
RUNS = 3


def wait_socket(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"luod did not start at {path}")
        time.sleep(0.05)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def client_round_trip(sock: Path, rounds: int) -> float:
    """ns per `session.show` of a session this client created (the same question)."""
    with Client.connect(sock, client_name="bench") as client:
        client.call("session.create", {"name": "bench-client"})
        t = time.perf_counter()
        for _ in range(rounds):
            client.call("session.show", {"name": "bench-client"})
        per = (time.perf_counter() - t) / rounds * 1e9
        client.call("session.close", {"name": "bench-client"})
    return per


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="luod-bench-run-"))
    env = {**os.environ, "LUOD_RUN_CACHE": str(workdir / "cache")}
    cc = compiler(env)
    interposer(env)
    programs = {}
    for name, source in (
        ("roundtrip", ROOT / "bench/run_roundtrip.c"),
        ("luo_kexec", ROOT / "tests/run/c/luo_kexec.c"),
    ):
        programs[name] = str(workdir / name)
        subprocess.run([cc, "-O2", "-o", programs[name], str(source)], check=True)
    sock = workdir / "luod.sock"
    luod = subprocess.Popen(
        [str(BIN / "luod"), "--socket", str(sock), "--ram", "16G", "--log-level", "warning"]
    )
    run = [str(BIN / "luod-run"), "--socket", str(sock), "--"]
    luoctl = [str(BIN / "luoctl"), "--socket", str(sock), "--json"]
    try:
        wait_socket(sock)
        best = [float("inf")] * 3
        for _ in range(RUNS):
            out = subprocess.run(
                [*run, programs["roundtrip"], str(ROUNDS)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            luo, bare = float(out[0]), float(out[1])
            client = client_round_trip(sock, ROUNDS // 4)
            best = [min(a, b) for a, b in zip(best, (luo, bare, client), strict=True)]
        luo, bare, client = best
        print(f"one round trip, ns (best of {RUNS} runs of {ROUNDS} calls)")
        heads = ("luod-run ioctl", "bare ioctl", "ratio", "Python client", "ratio")
        print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (16, 11, 6, 14, 6), strict=True)))
        print(f"{luo:16.0f} {bare:11.0f} {luo / bare:6.0f} {client:14.0f} {luo / client:6.2f}")
        record("run", "luod-run ioctl / bare ioctl", luo / bare)
        record("run", "luod-run ioctl / Python client", luo / client)
        release = json.loads(
            subprocess.run([*luoctl, "status"], check=True, capture_output=True, text=True).stdout
        )["kernel"]["release"]
        print("\nacross a kexec, seconds (stage 1, `luoctl update`, stage 2); blackout ms")
        print(f"{'test':>16} {'stage 1':>8} {'update':>7} {'blackout':>9} {'stage 2':>8}")
        for test in ("stress_sessions", "stress_files"):
            first = timed([*run, programs["luo_kexec"], test], env)
            t = time.perf_counter()
            update = json.loads(
                subprocess.run(
                    [*luoctl, "update", "--to", release], check=True, capture_output=True, text=True
                ).stdout
            )
            upd = time.perf_counter() - t
            second = timed([*run, programs["luo_kexec"], test, "--stage", "2"], env)
            print(f"{test:>16} {first:8.2f} {upd:7.2f} {update['blackout_ms']:9.1f} {second:8.2f}")
    finally:
        luod.terminate()
        luod.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
