"""Request rate through the real socket, as a ratio against a bare trio echo server that
uses the same framing and the same fd passing, both measured in the same run with the same
load client. Not a test: prints a table.
Run: `.venv/bin/python bench/ipc.py [--seconds 3] [--runs 5]`.

The echo server reads with `recvmsg` (fds by SCM_RIGHTS, closed once received), splits
u32 BE length frames and writes each burst back: no CBOR, no dispatch, no kernel model,
the floor for any server on this stack. Against it, luod answers two requests with the
whole protocol (hello, CBOR decoding with its hardening, strict params, dispatch, reply):

* `status`, the cheap request: the machine's state, a map of a dozen keys;
* `memfd.preserve` of a 4 KiB memfd passed with the request: a new emulated memfd, the
  copy, the preserve in the kernel model (every request a new token of the connection's
  own session).

Beside them the floor: the echo server's loop, but each request is decoded with cbor2 and
answered with luod's own result for its method (taken from luod at the start), encoded with
cbor2 each time. It does no work at all, so floor / echo is the most any server on this
stack can reach, and luod / floor is what luod's own work costs.

Each case runs at 1 and at 50 connections. Each rate is the best of `--runs` runs, the servers
alternating, so that a burst of load from other processes on the machine hits all
of them alike. `luoctl status`'s start-up cost is bench/cli.py.
"""

from __future__ import annotations

import argparse
import array
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
import trio
from _summary import record  # bench/_summary.py, beside this file

from luod.ipc.client import Client

BIN = Path(sys.executable).parent
TARGET = 0.8

ECHO_SERVER = r"""
import array, os, socket, struct, sys, trio
import cbor2

# "floor" mode: decode each request and answer it with luod's own result for its method
# (read from the file named by argv[3]), encoded anew each time, as any CBOR server must.
CANNED = cbor2.loads(open(sys.argv[3], "rb").read()) if sys.argv[2] == "floor" else None

def answer(body):
    request = cbor2.loads(body)
    if request["kind"] == "hello":
        return cbor2.dumps({"kind": "welcome", "version": 1, "server": "floor"})
    reply = {"kind": "reply", "id": request["id"], "result": CANNED[request["method"]], "nfds": 0}
    return cbor2.dumps(reply)

ANCILLARY = socket.CMSG_SPACE(253 * 4)

async def handle(stream):
    sock = stream.socket
    buf = b""
    async with stream:
        while True:
            data, ancdata, _flags, _addr = await sock.recvmsg(
                65536, ANCILLARY, socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        os.close(fd)
            if not data:
                return
            buf += data
            out = b""
            while len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + n:
                    break
                if CANNED is None:
                    out += buf[: 4 + n]
                else:
                    body = answer(buf[4 : 4 + n])
                    out += struct.pack(">I", len(body)) + body
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


def request(id: int, method: str, params: dict[str, object], nfds: int = 0) -> bytes:
    return frame({"kind": "request", "id": id, "method": method, "params": params, "nfds": nfds})


HELLO = frame({"kind": "hello", "version": 1, "client": "bench"})


class Peer:
    """One load connection: frames out (with fds), whole frames back."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buf = bytearray()

    async def send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        if fds:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
            sent = await self.sock.sendmsg([data], ancillary)
        else:
            sent = await self.sock.send(data)
        while sent < len(data):
            sent += await self.sock.send(data[sent:])

    async def reply(self) -> bytes:
        buf = self.buf
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) >= 4 + n:
                    body = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return body
            data = await self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed")
            buf += data

    async def call(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        await self.send(data, fds)
        body = await self.reply()
        if body[:20].find(b"error") >= 0 and cbor2.loads(body).get("kind") == "error":
            raise RuntimeError(f"luod refused: {cbor2.loads(body)}")


async def connect(path: str) -> Peer:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(path)
    peer = Peer(sock)
    await peer.call(HELLO)
    return peer


async def run_status(peer: Peer, name: str, stop: float, is_luod: bool) -> int:
    data = request(1, "status", {})
    done = 0
    while trio.current_time() < stop:
        await peer.call(data)
        done += 1
    return done


async def run_preserve(peer: Peer, name: str, stop: float, is_luod: bool) -> int:
    fd = os.memfd_create("bench", os.MFD_CLOEXEC)
    try:
        os.write(fd, bytes(range(256)) * 16)  # 4 KiB
        if is_luod:
            await peer.call(request(1, "session.create", {"name": name}))
        done = 0
        while trio.current_time() < stop:
            params = {"session": name, "token": done + 1}
            await peer.call(request(done + 2, "memfd.preserve", params, nfds=1), (fd,))
            done += 1
        return done
    finally:
        os.close(fd)


async def load(path: str, connections: int, seconds: float, case: str, tag: str) -> float:
    """Requests per second over `connections` concurrent connections."""
    body = {"status": run_status, "preserve": run_preserve}[case]
    is_luod = path.endswith("luod.sock")
    done = 0
    peers = [await connect(path) for _ in range(connections)]
    start = trio.current_time()
    stop = start + seconds
    ends: list[float] = []

    async def worker(i: int) -> None:
        nonlocal done
        count = await body(peers[i], f"{tag}-{i}", stop, is_luod)
        done += count  # not `done += await ...`: that reads `done` before the await
        ends.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for i in range(connections):
            nursery.start_soon(worker, i)
    rate = done / (max(ends) - start)
    if is_luod and case == "preserve":  # give the emulated RAM back, outside the clock
        for i, peer in enumerate(peers):
            await peer.call(request(10**9, "session.close", {"name": f"{tag}-{i}"}))
    for peer in peers:
        peer.sock.close()
    return rate


def canned_results(luod: Path) -> bytes:
    """luod's own results for the benchmarked methods, for the floor server to send."""
    with Client.connect(luod, timeout=30, client_name="bench/ipc") as c:
        status = c.call("status").result
        c.call("session.create", {"name": "canned"})
        fd = os.memfd_create("bench", os.MFD_CLOEXEC)
        try:
            os.write(fd, bytes(range(256)) * 16)
            params = {"session": "canned", "token": 1}
            preserve = c.call("memfd.preserve", params, fds=[fd]).result
        finally:
            os.close(fd)
        c.call("session.close", {"name": "canned"})
    return cbor2.dumps({"status": status, "memfd.preserve": preserve})


def wait_socket(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def best_rates(
    paths: list[str], case: str, connections: int, seconds: float, runs: int
) -> list[float]:
    """Best requests/s of `runs` alternating runs against each socket."""
    best = [0.0 for _ in paths]
    for run in range(runs):
        for i, path in enumerate(paths):
            tag = f"{case}{connections}r{run}"
            best[i] = max(best[i], trio.run(load, path, connections, seconds, case, tag))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one run")
    parser.add_argument("--runs", type=int, default=5, help="runs per side, best kept")
    parser.add_argument("--cases", default="status,preserve", help="comma-separated")
    parser.add_argument("--connections", default="1,50", help="comma-separated")
    opts = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="luod-bench-"))
    echo_path, floor_path = workdir / "echo.sock", workdir / "floor.sock"
    luod_path, canned = workdir / "luod.sock", workdir / "canned.cbor"
    luod = subprocess.Popen(
        [str(BIN / "luod"), "--socket", str(luod_path), "--ram", "8G", "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    servers = [luod]
    try:
        wait_socket(luod_path)
        canned.write_bytes(canned_results(luod_path))
        for path, mode in ((echo_path, "echo"), (floor_path, "floor")):
            command = [sys.executable, "-c", ECHO_SERVER, str(path), mode, str(canned)]
            servers.append(subprocess.Popen(command))
            wait_socket(path)
        print(
            f"requests per second, best of {opts.runs} runs of {opts.seconds:g} s "
            f"(same load client, same framing, same fd passing); target >= {TARGET}x echo\n"
            "floor: a server that only decodes each request and encodes luod's own reply "
            "to it with cbor2,\nno work: what any server on this stack can reach\n"
        )
        columns = ("bare echo", "floor", "luod", "luod/echo", "floor/echo", "luod/floor")
        print(f"{'request':<18} {'conns':>5}" + "".join(f"{c:>11}" for c in columns))
        for case in opts.cases.split(","):
            for n in (int(c) for c in opts.connections.split(",")):
                paths = [str(echo_path), str(floor_path), str(luod_path)]
                bare, floor, real = best_rates(paths, case, n, opts.seconds, opts.runs)
                label = "status" if case == "status" else "memfd.preserve 4K"
                cells = [f"{bare:.0f}", f"{floor:.0f}", f"{real:.0f}"]
                cells += [f"{real / bare:.2f}", f"{floor / bare:.2f}", f"{real / floor:.2f}"]
                print(f"{label:<18} {n:>5}" + "".join(f"{c:>11}" for c in cells), flush=True)
                record("ipc", f"{label} x{n}: luod / bare echo", real / bare, f">={TARGET}")
                record("ipc", f"{label} x{n}: floor / bare echo", floor / bare)
                record("ipc", f"{label} x{n}: luod / floor", real / floor)
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
        for p in (echo_path, floor_path, luod_path, canned):
            if p.exists():
                p.unlink()
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
