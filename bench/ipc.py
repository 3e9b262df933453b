"""Request rate through the real socket, as a ratio against a bare trio echo server that
uses the same u32 framing, both measured in the same run with the same load client; and
the start-up cost of one `luoctl status` against `python -c pass`.

The echo server parses frames and writes them back: no CBOR, no dispatch, no kernel model,
the floor for any server on this stack. luod answers `session.list` (a cheap request; the
caller has no sessions) with the full protocol: hello, CBOR decoding with its hardening,
strict structuring, dispatch, reply. Not a test: prints a table.
Run: `.venv/bin/python bench/ipc.py`.

Each rate is the best of `RUNS` runs, echo and luod alternating, so that a burst of load
from other processes on the machine hits both sides alike. The start-up comparison runs
with a warm bytecode cache (`PYTHONDONTWRITEBYTECODE` dropped, one warm-up run each), as an
installed luoctl has: without it every run would also time compiling luoctl's sources.
"""

from __future__ import annotations

import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
import trio

BIN = Path(sys.executable).parent
SECONDS = 3.0
RUNS = 5

ECHO_SERVER = r"""
import struct, sys, trio

async def handle(stream):
    buf = b""
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            out = b""
            while len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + n:
                    break
                out += buf[: 4 + n]
                buf = buf[4 + n :]
            if out:
                await stream.send_all(out)

async def main(path):
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(128)
    await trio.serve_listeners(handle, [trio.SocketListener(sock)])

trio.run(main, sys.argv[1])
"""


def frame(item: object) -> bytes:
    body = cbor2.dumps(item)
    return struct.pack(">I", len(body)) + body


HELLO = frame({"kind": "hello", "version": 1, "client": "bench"})


async def read_frame(stream: trio.SocketStream, buf: bytearray) -> None:
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) >= 4 + n:
                del buf[: 4 + n]
                return
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed")
        buf += data


async def load(path: str, connections: int, seconds: float) -> float:
    """Requests per second over `connections` concurrent connections."""
    request = frame({"kind": "request", "id": 1, "method": "session.list", "params": {}, "nfds": 0})
    done = 0
    stop = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal done
        stream = await trio.open_unix_socket(path)
        buf = bytearray()
        async with stream:
            await stream.send_all(HELLO)
            await read_frame(stream, buf)
            while trio.current_time() < stop:
                await stream.send_all(request)
                await read_frame(stream, buf)
                done += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return done / (trio.current_time() - start)


def wait_socket(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def median_runs(cmds: list[list[str]], runs: int = 20) -> list[float]:
    """Median wall time of each command, the commands alternating, after one warm-up."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times: list[list[float]] = [[] for _ in cmds]
    for i in range(runs + 1):
        for cmd, samples in zip(cmds, times, strict=True):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            if i:  # the first round writes the bytecode cache
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def best_rates(paths: list[str], connections: int) -> list[float]:
    """Best requests/s of `RUNS` alternating runs against each socket."""
    best = [0.0 for _ in paths]
    for _ in range(RUNS):
        for i, path in enumerate(paths):
            best[i] = max(best[i], trio.run(load, path, connections, SECONDS))
    return best


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="luod-bench-"))
    echo_path, luod_path = workdir / "echo.sock", workdir / "luod.sock"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_path)])
    luod = subprocess.Popen(
        [str(BIN / "luod"), "--socket", str(luod_path), "--ram", "1G", "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_socket(echo_path)
        wait_socket(luod_path)
        print(
            f"requests per second, best of {RUNS} runs of {SECONDS:g} s "
            "(same load client, same framing)\n"
        )
        print(f"{'connections':>11} {'bare echo':>10} {'luod':>10} {'ratio':>6}")
        for n in (1, 50):
            bare, real = best_rates([str(echo_path), str(luod_path)], n)
            print(f"{n:>11} {bare:>10.0f} {real:>10.0f} {real / bare:>6.2f}")
        base, ctl = median_runs(
            [
                [sys.executable, "-c", "pass"],
                [str(BIN / "luoctl"), "--socket", str(luod_path), "status"],
            ]
        )
        print("\none invocation, median of 20 (warm bytecode cache)\n")
        print(f"{'python -c pass':<22} {base * 1000:>7.1f} ms")
        print(f"{'luoctl status':<22} {ctl * 1000:>7.1f} ms")
        print(f"{'ratio':<22} {ctl / base:>7.2f}")
    finally:
        for proc in (echo, luod):
            proc.terminate()
            proc.wait(timeout=30)
        for p in (echo_path, luod_path):
            if p.exists():
                p.unlink()
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
