"""The fast paths of the request path agree with the reference paths they shortcut.

* envelopes: `structure_message` takes a hand-written path for well-formed envelopes and
  the converter for everything else; both must give the same message, or the same error;
* sending: `encode_message` / `wire_message` build the wire form by hand and must be byte
  for byte what the converter and `cbor2.dumps` give, or decline;
* decoding: one hardened CBOR decoder per thread is reused, so no input may leave state
  behind that changes how the next frame decodes;
* the data-model check's fast walk agrees with the explaining one;
* the trio adapter's raw socket paths: partial writes, fds, bursts, cancellation.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
from typing import Any

import attrs
import cbor2
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from luod.ipc.async_transport import CHECKPOINT_EVERY, FramedStream
from luod.ipc.cbor import decode_item, encode_message, encode_uint
from luod.ipc.connection import CLOSED, Connection
from luod.ipc.convert import MethodRegistry, converter
from luod.ipc.datamodel import MAX_DEPTH, check_data_model, conforms
from luod.ipc.envelope import (
    _structure_message_slow,
    structure_message,
    unstructure_message,
    wire_message,
)
from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.fdpass import close_fds
from luod.ipc.framing import encode_frame
from luod.ipc.messages import (
    MESSAGE_TYPES,
    ErrorReply,
    Event,
    Hello,
    Message,
    Reply,
    Request,
    Welcome,
)
from luod.ipc.state import Role

from .helpers import FUZZ, cbor_frame, hello_item
from .test_fuzz import data_model, envelope_like, messages

# --- envelopes: fast structuring == the converter ---------------------------------------


def outcome(fn: Any, *args: Any) -> tuple[str, object]:
    try:
        return "ok", fn(*args)
    except RemoteProtocolError as exc:
        return "error", (exc.name, exc.message)


def slow(item: dict[str, Any]) -> Message:
    """The converter's answer (structure_message's kind checks passed)."""
    return _structure_message_slow(item, item["kind"])


@FUZZ
@given(envelope_like)
def test_fast_structuring_matches_the_converter_on_random_maps(item: dict[str, Any]) -> None:
    kind = item.get("kind")
    if type(kind) is not str or kind not in MESSAGE_TYPES:
        return  # refused before either path runs
    assert outcome(structure_message, item) == outcome(slow, item)


@FUZZ
@given(messages)
def test_fast_structuring_matches_the_converter_on_valid_envelopes(message: Message) -> None:
    wire = converter().unstructure(message)
    item = {"kind": message.KIND, **wire}
    fast = structure_message(item)
    assert fast == slow(item) == message
    assert type(fast) is type(message)


ALMOST = [
    # One thing wrong (or unusual) in each: the converter decides, not the fast path.
    {"kind": "hello", "version": True, "client": "c"},
    {"kind": "hello", "version": -1, "client": "c"},
    {"kind": "hello", "version": 1, "client": "c", "x": 1},
    {"kind": "welcome", "version": 1},
    {"kind": "request", "id": 1, "method": "m", "params": {1: 2}},
    {"kind": "request", "id": 1, "method": "m", "params": {}, "nfds": True},
    {"kind": "request", "id": 1, "method": "m", "params": {}, "nfds": 254},
    {"kind": "request", "id": 1 << 32, "method": "m", "params": {}},
    {"kind": "request", "id": 1, "method": b"m", "params": {}},
    {"kind": "request", "id": 1, "method": "m", "params": {}, "fds": []},
    {"kind": "reply", "id": 1, "result": None, "nfds": -1},
    {"kind": "reply", "id": 1.0, "result": None},
    {"kind": "error", "id": True, "error": {}},
    {
        "kind": "error",
        "id": None,
        "error": {"name": "n", "errno": 1, "message": "", "object": None},
    },
    {"kind": "error", "id": None, "error": []},
    {"kind": "event", "event": "e", "ts": 1 << 53, "data": {}},
    {"kind": "event", "event": "e", "ts": -(1 << 53) - 1, "data": {}},
    {"kind": "event", "event": "e", "ts": False, "data": {}},
    {"kind": "event", "event": "e", "ts": 0.5, "data": {2: 3}},
]


@pytest.mark.parametrize("item", ALMOST, ids=lambda i: i["kind"])
def test_fast_structuring_defers_edge_cases(item: dict[str, Any]) -> None:
    assert outcome(structure_message, item) == outcome(slow, item)


def test_int_timestamp_widened_on_the_fast_path() -> None:
    event = structure_message({"kind": "event", "event": "e", "ts": 1 << 53, "data": {}})
    assert isinstance(event, Event) and type(event.ts) is float and event.ts == 2.0**53


# --- sending: hand-built wire forms == the converter + cbor2 ------------------------------


def reference_wire(message: Message) -> dict[str, object]:
    return {"kind": message.KIND, **converter().unstructure(message)}


@FUZZ
@given(messages)
def test_wire_message_matches_the_converter(message: Message) -> None:
    wire = wire_message(message)
    assert wire is not None
    assert list(wire) == list(reference_wire(message))
    assert wire == reference_wire(message) == unstructure_message(message)


@FUZZ
@given(messages)
def test_encode_message_is_byte_identical(message: Message) -> None:
    body = encode_message(message)
    assert body == cbor2.dumps(reference_wire(message))
    assert encode_frame(reference_wire(message))[4:] == body


class Colour(enum.Enum):
    RED = "red"


@attrs.frozen
class Point:
    x: int


@pytest.mark.parametrize(
    "message",
    [
        Reply(id=1, result={"c": Colour.RED}),
        Reply(id=1, result=Point(3)),
        Reply(id=1, result=(1, 2)),
        Event(event="e", ts=0.0, data={"c": Colour.RED}),
        Request(id=1, method="m", params={"p": Point(1)}),
        ErrorReply(id=1, error=ErrorInfo("n", None, "m", None)),
    ],
    ids=repr,
)
def test_values_outside_the_data_model_take_the_converter(message: Message) -> None:
    """What the converter would transform (enums, attrs instances, tuples) is never sent
    as is: the fast paths decline it and the converter's form goes out, or the error."""
    reference = reference_wire(message)
    if check_data_model(reference) is None:
        assert unstructure_message(message) == reference
        assert sent_body(message) == cbor2.dumps(reference)
    else:
        assert wire_message(message) is None and encode_message(message) is None


def sent_body(message: Message) -> bytes:
    """What a server connection puts on the wire for `message` (its body)."""
    conn = Connection(Role.SERVER)
    conn.receive_data(cbor_frame(hello_item()))
    conn.next_event()
    conn.send(Welcome(version=1, server="s"))
    if isinstance(message, Reply | ErrorReply) and message.id is not None:
        conn.receive_data(
            cbor_frame({"kind": "request", "id": message.id, "method": "m", "params": {}})
        )
        conn.next_event()
    if isinstance(message, Request):
        client = Connection(Role.CLIENT)
        client.send(Hello(version=1, client="c"))
        client.receive_data(cbor_frame({"kind": "welcome", "version": 1, "server": "s"}))
        client.next_event()
        return client.send(message)[4:]
    return conn.send(message)[4:]


def test_unencodable_reply_still_refused() -> None:
    conn_body = Reply(id=1, result={"s": {1, 2}})
    assert encode_message(conn_body) is None
    with pytest.raises(Exception, match="set"):
        sent_body(conn_body)


@pytest.mark.parametrize(
    "n",
    [0, 1, 23, 24, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 1],
)
def test_encode_uint(n: int) -> None:
    assert encode_uint(n) == cbor2.dumps(n)


def test_deep_results_keep_the_depth_cap() -> None:
    """A reply's result sits one level down in the envelope: the cap counts from the top."""

    def nest(depth: int) -> object:
        value: object = 0
        for _ in range(depth):
            value = [value]
        return value

    assert encode_message(Reply(id=1, result=nest(MAX_DEPTH - 1))) is not None
    assert encode_message(Reply(id=1, result=nest(MAX_DEPTH))) is None
    body = encode_message(Reply(id=1, result=nest(MAX_DEPTH - 1)))
    assert body is not None and decode_item(body)


# --- the data-model check ---------------------------------------------------------------

odd_values = st.sampled_from(
    [(1, 2), {1: "a"}, {("a",): 1}, cbor2.undefined, 1 << 64, -(1 << 64) - 1, set(), Colour.RED]
)
maybe_odd = st.recursive(
    data_model | odd_values,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(maybe_odd, st.integers(0, 6))
def test_conforms_agrees_with_check_data_model(value: object, max_depth: int) -> None:
    assert conforms(value, max_depth=max_depth) == (
        check_data_model(value, max_depth=max_depth) is None
    )


# --- the reused decoder -----------------------------------------------------------------

BAD_BODIES = [
    b"\x81" * 20 + b"\xff",  # break code
    b"\x81" * 20 + b"\xd8\x1c\x00",  # value sharing, deep
    b"\xd8\x1d\x00",  # shared reference
    b"\xd9\x01\x00\x80",  # string reference namespace
    b"\x81" * 20 + b"\x5a\xff\xff\xff\xff",  # truncated
    b"\xa2\x61a\x01\x61a\x02",  # duplicate keys
    b"\x81" * 31 + b"\xd9\x03\xe7\x00",  # unknown tag, deep
    b"\x81" * 10 + b"\x7f",  # indefinite text
    b"\x81" * 40 + b"\x00",  # too deep
    b"\x61\xff",  # invalid UTF-8
]


def nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


@pytest.mark.parametrize("bad", BAD_BODIES, ids=lambda b: b.hex()[:16])
def test_decoder_state_does_not_leak_between_frames(bad: bytes) -> None:
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as info:
            decode_item(bad)
        assert info.value.name is ProtocolErrorName.BAD_CBOR
        assert decode_item(nested(MAX_DEPTH)) == decode_item(nested(MAX_DEPTH))
        with pytest.raises(RemoteProtocolError):
            decode_item(nested(MAX_DEPTH + 1))
        assert decode_item(b"\xa1\x61a\x01") == {"a": 1}
        with pytest.raises(RemoteProtocolError, match="trailing"):
            decode_item(b"\xa1\x61a\x01\x00")


def test_decoding_in_threads() -> None:
    """Each thread has its own decoder: concurrent decoding never mixes inputs."""
    items = [{"t": t, "data": list(range(t * 10))} for t in range(4)]
    bodies = [cbor2.dumps(item) for item in items]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for _ in range(2000):
                assert decode_item(bodies[t]) == items[t]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- the registry's hook cache ----------------------------------------------------------


def test_registry_results_and_errors_are_stable(registry: MethodRegistry) -> None:
    request = Request(id=1, method="session.create", params={"name": "vm1"})
    first = registry.structure(request)
    assert registry.structure(request) == first
    bad = Request(id=1, method="session.create", params={"name": 1})
    seen = set()
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as info:
            registry.structure(bad)
        assert info.value.name is ProtocolErrorName.BAD_PARAMS
        seen.add(info.value.message)
    assert len(seen) == 1
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as info:
            registry.structure(Request(id=1, method="nope", params={}))
        assert info.value.name is ProtocolErrorName.UNKNOWN_METHOD


# --- the trio adapter over a real socket ------------------------------------------------


def socket_pair(buffer: int | None = None) -> tuple[FramedStream, FramedStream]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if buffer is not None:
        for sock in (a, b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    client = FramedStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(a)), Connection(Role.CLIENT)
    )
    server = FramedStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(b)), Connection(Role.SERVER)
    )
    return client, server


async def handshake(client: FramedStream, server: FramedStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.accept_hello, "s")
        await client.hello("c")


async def test_raw_socket_paths_are_used() -> None:
    client, server = socket_pair()
    assert client._raw is not None and server._raw is not None
    await client.aclose()
    await server.aclose()


async def test_large_frames_with_fds_over_a_small_socket_buffer() -> None:
    """Frames much larger than the socket buffer go out in pieces (waiting for room), the
    fds with the first piece, and arrive whole, in order, with their fds."""
    client, server = socket_pair(buffer=4096)
    await handshake(client, server)
    payloads = [os.urandom(n) for n in (100_000, 10, 300_000)]
    fds = [os.memfd_create(f"big{i}") for i in range(len(payloads))]
    try:
        for i, fd in enumerate(fds):
            os.write(fd, b"fd%d" % i)
        received: list[Request] = []

        async def read() -> None:
            for _ in payloads:
                message = await server.receive()
                assert isinstance(message, Request)
                received.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for i, payload in enumerate(payloads):
                request = Request(id=i, method="put", params={"data": payload}, fds=[fds[i]])
                await client.send(request)
        assert [r.params["data"] for r in received] == payloads
        for i, message in enumerate(received):
            assert len(message.fds) == 1
            assert os.pread(message.fds[0], 10, 0) == b"fd%d" % i
            close_fds(message.fds)
    finally:
        close_fds(fds)
        await client.aclose()
        await server.aclose()


async def test_a_burst_of_frames_is_read_at_once() -> None:
    """Frames already buffered come out without reading: one read for the whole burst."""
    client, server = socket_pair()
    await handshake(client, server)
    burst = b"".join(
        cbor_frame({"kind": "request", "id": i, "method": "m", "params": {}}) for i in range(20)
    )
    await client.stream.send_all(burst)
    await trio.testing.wait_all_tasks_blocked()
    first = await server.receive()
    assert isinstance(first, Request) and first.id == 0
    assert server.connection._decoder.buffered == len(burst) - len(burst) // 20
    ids = [first.id]
    with trio.fail_after(1):
        for _ in range(19):
            message = await server.receive()
            assert isinstance(message, Request)
            ids.append(message.id)
    assert ids == list(range(20))
    await client.aclose()
    await server.aclose()


async def test_cancelled_receive_loses_nothing() -> None:
    client, server = socket_pair()
    await handshake(client, server)
    with trio.move_on_after(0.05) as scope:
        await server.receive()  # nothing comes: waits in wait_readable
    assert scope.cancelled_caught
    await client.send(Request(id=7, method="m", params={}))
    message = await server.receive()
    assert isinstance(message, Request) and message.id == 7
    await client.aclose()
    await server.aclose()


async def test_closed_stream_errors() -> None:
    client, server = socket_pair()
    await handshake(client, server)
    await client.aclose()
    assert await server.receive() is CLOSED
    await server.stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.send(Event(event="e", ts=0.0, data={}))


async def test_peer_gone_breaks_sends() -> None:
    client, server = socket_pair()
    await handshake(client, server)
    await client.aclose()
    try:
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):  # the first writes may still land in the socket buffer
                await server.send(Event(event="e", ts=0.0, data={"x": "y" * 1000}))
        with pytest.raises(trio.BrokenResourceError):  # and it stays broken
            await server.send(Event(event="e", ts=0.0, data={}))
    finally:
        await server.aclose()


async def test_buffered_bursts_still_yield() -> None:
    """Returning buffered frames needs no read, but `receive` still yields regularly, so a
    peer pipelining requests cannot starve the other tasks."""
    client, server = socket_pair()
    await handshake(client, server)
    count = 8 * CHECKPOINT_EVERY
    burst = b"".join(
        cbor_frame({"kind": "request", "id": i, "method": "m", "params": {}}) for i in range(count)
    )
    await client.stream.send_all(burst)
    await trio.testing.wait_all_tasks_blocked()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await server.receive()  # the read: everything arrives at once
        before = ticks
        for _ in range(count - 1):
            await server.receive()
        # trio may run the ticker before or after us in each batch: one tick of slack.
        assert ticks - before >= (count - 1) // CHECKPOINT_EVERY - 1
        nursery.cancel_scope.cancel()
    await client.aclose()
    await server.aclose()


async def test_cancelled_send_changes_nothing() -> None:
    """A send cancelled before it starts writes nothing, leaves the connection's state
    as it was and the stream usable."""
    client, server = socket_pair()
    await handshake(client, server)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.send(Request(id=5, method="m", params={}))
    assert scope.cancelled_caught
    assert client.connection.in_flight == frozenset()
    await client.send(Request(id=5, method="again", params={}))
    message = await server.receive()
    assert isinstance(message, Request) and message.method == "again"
    await client.aclose()
    await server.aclose()
