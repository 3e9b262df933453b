"""Hostile clients against the installed luod: 2000 idle connections and two slow-lorises
(a hello dripped a byte at a time, a request dripped after a hello) alongside 20 working
clients. The working ones see no error and their p99 latency stays under a second; the
dripped hello is cut off at the hello deadline."""

from __future__ import annotations

import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from luod.ipc.client import Client

from .conftest import LuodProcess, start_luod

IDLE = 2000
WORKERS = 20
CALLS = 25
HELLO_TIMEOUT = 2.0


def frame(item: dict[str, object]) -> bytes:
    body = cbor2.dumps(item)
    return struct.pack(">I", len(body)) + body


HELLO = frame({"kind": "hello", "version": 1, "client": "idle"})


@pytest.fixture
def luod(workdir: Path) -> Iterator[LuodProcess]:
    # The idle ones are the test's own uid, like the workers: lift the per-uid cap so
    # that it is the daemon's serving, not the cap, that this test measures.
    running = start_luod(
        workdir,
        *("--max-connections-per-uid", str(IDLE + 100), "--max-connections", str(IDLE + 200)),
        *("--hello-timeout", str(HELLO_TIMEOUT)),
    )
    yield running
    running.stop()


def _recv_frame(sock: socket.socket) -> dict[str, object]:
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    item: dict[str, object] = cbor2.loads(data[4:])
    return item


def _idle_connections(path: Path) -> list[socket.socket]:
    """IDLE connections that completed their hello and then say nothing."""
    idle = []
    for _ in range(IDLE):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(str(path))
        sock.sendall(HELLO)
        idle.append(sock)
    for sock in idle:
        assert _recv_frame(sock)["kind"] == "welcome"
    return idle


def _drip(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    for byte in data:
        if stop.wait(0.1):  # a hello (35 bytes) takes 3.5 s: past the deadline
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return


def _work(path: Path, index: int, latencies: list[float], errors: list[BaseException]) -> None:
    try:
        started = time.monotonic()
        with Client.connect(str(path), timeout=10, client_name=f"worker{index}") as client:
            latencies.append(time.monotonic() - started)
            for call in range(CALLS):
                method, params = (
                    ("status", {}) if call % 2 else ("session.create", {"name": f"w{index}.{call}"})
                )
                started = time.monotonic()
                client.call(method, params)
                latencies.append(time.monotonic() - started)
    except BaseException as exc:  # every error is a failure of the test: collect them
        errors.append(exc)


def test_idle_and_slow_clients_do_not_hurt_working_ones(luod: LuodProcess) -> None:
    idle = _idle_connections(luod.socket)
    stop = threading.Event()
    loris_hello = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    loris_request = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        loris_hello.connect(str(luod.socket))
        loris_request.connect(str(luod.socket))
        loris_request.sendall(HELLO)
        assert _recv_frame(loris_request)["kind"] == "welcome"
        request = frame({"kind": "request", "id": 1, "method": "status", "params": {}})
        drippers = [
            threading.Thread(target=_drip, args=(loris_hello, HELLO * 4, stop)),
            threading.Thread(target=_drip, args=(loris_request, request * 8, stop)),
        ]
        for dripper in drippers:
            dripper.start()
        latencies: list[float] = []
        errors: list[BaseException] = []
        workers = [
            threading.Thread(target=_work, args=(luod.socket, i, latencies, errors))
            for i in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert not errors, errors[:3]
        assert len(latencies) == WORKERS * (CALLS + 1)
        p99 = statistics.quantiles(latencies, n=100)[98]
        assert p99 < 1.0, f"p99 {p99:.3f} s, max {max(latencies):.3f} s"
        # The dripped hello is cut off at the deadline with its error frame.
        loris_hello.settimeout(HELLO_TIMEOUT + 10)
        received = b""
        while b"luod.HelloTimeout" not in received:
            chunk = loris_hello.recv(65536)
            assert chunk, f"closed without the error frame: {received!r}"
            received += chunk
        with Client.connect(str(luod.socket), timeout=10, client_name="check") as client:
            connections = client.call("status").result["daemon"]["connections"]
        assert connections["open"] >= IDLE + 2  # the idle ones, the request dripper, us
        assert connections["refused"] == 0
    finally:
        stop.set()
        for sock in [*idle, loris_hello, loris_request]:
            sock.close()
