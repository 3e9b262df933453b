"""Property tests: whatever bytes arrive, the protocol yields a message or a *named*
`RemoteProtocolError`; never another exception, never a value outside the data model.

Inputs: random bytes, random CBOR built head by head (so indefinite lengths, duplicate and
non-string keys, every kind of tag, simple values, invalid UTF-8 and bogus lengths all
occur), mutations of valid frames, truncations at every length, oversized length
prefixes, deep nesting, and random maps thrown at the envelope and parameter structuring.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from luod.ipc.cbor import decode_item
from luod.ipc.connection import CLOSED, NEED_DATA, Connection
from luod.ipc.convert import MethodRegistry
from luod.ipc.datamodel import MAX_DEPTH, check_data_model
from luod.ipc.envelope import structure_message, unstructure_message
from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.framing import FrameDecoder, encode_frame
from luod.ipc.messages import ErrorReply, Event, Hello, Message, Reply, Request, Welcome
from luod.ipc.state import Role

from .conftest import make_registry
from .helpers import FUZZ, cbor_frame, frame, hello_item

NAMES = set(ProtocolErrorName)

# --- strategies ----------------------------------------------------------------------------


def head(major: int, arg: int) -> bytes:
    """A CBOR head: major type and argument in the shortest form."""
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if arg < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | info]) + struct.pack(fmt, arg)
    raise ValueError(arg)


ARGS = st.one_of(st.integers(0, 30), st.integers(0, (1 << 64) - 1))
TAGS = st.sampled_from([0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 256, 258, 1004, 55799, 999, 1 << 33])
TEXT = st.one_of(st.text(max_size=8).map(str.encode), st.binary(max_size=8))

scalar_cbor = st.one_of(
    st.builds(lambda n: head(0, n), ARGS),
    st.builds(lambda n: head(1, n), ARGS),
    st.builds(lambda b: head(2, len(b)) + b, st.binary(max_size=8)),
    st.builds(lambda b: head(3, len(b)) + b, TEXT),
    st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20", b"\xff"]),
    st.builds(lambda x: b"\xfb" + struct.pack(">d", x), st.floats()),
    st.builds(lambda x: b"\xfa" + struct.pack(">f", x), st.floats(width=32)),
    st.binary(min_size=1, max_size=3),  # arbitrary bytes: reserved heads, junk
    st.builds(lambda n, b: head(2, n) + b, ARGS, st.binary(max_size=4)),  # lying lengths
)


def compound(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(children, max_size=4)
    return st.one_of(
        st.builds(lambda xs: head(4, len(xs)) + b"".join(xs), items),
        st.builds(lambda xs: b"\x9f" + b"".join(xs) + b"\xff", items),  # indefinite array
        st.builds(lambda xs: head(5, len(xs) // 2) + b"".join(xs), items),
        st.builds(lambda xs: b"\xbf" + b"".join(xs) + b"\xff", items),  # indefinite map
        st.builds(  # maps with text keys, possibly duplicated
            lambda keys, vals: (
                head(5, min(len(keys), len(vals)))
                + b"".join(cbor2.dumps(k) + v for k, v in zip(keys, vals, strict=False))
            ),
            st.lists(st.sampled_from(["kind", "id", "a", "a"]), max_size=4),
            st.lists(children, max_size=4),
        ),
        st.builds(lambda t, x: head(6, t) + x, TAGS, children),
    )


raw_cbor = st.recursive(scalar_cbor, compound, max_leaves=12)

data_model = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 64), (1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=15,
)

fds_field = st.lists(st.integers(3, 1000), max_size=3)
ids = st.integers(0, (1 << 32) - 1)
params = st.dictionaries(st.text(max_size=6), data_model, max_size=4)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, version=st.integers(0, 1 << 20), client=st.text(max_size=10)),
    st.builds(Welcome, version=st.integers(0, 1 << 20), server=st.text(max_size=10)),
    st.builds(Request, id=ids, method=st.text(max_size=10), params=params, fds=fds_field),
    st.builds(Reply, id=ids, result=data_model, fds=fds_field),
    st.builds(
        ErrorReply,
        id=st.none() | ids,
        error=st.builds(
            ErrorInfo,
            st.text(max_size=10),
            st.none() | st.sampled_from(["EEXIST", "EBUSY"]),
            st.text(max_size=10),
            st.none() | st.text(max_size=5),
        ),
    ),
    st.builds(Event, event=st.text(max_size=8), ts=st.floats(allow_nan=False), data=params),
)

# --- helpers -------------------------------------------------------------------------------


def drain(conn: Connection) -> list[object]:
    """next_event until it needs data or the stream closed, or a named protocol error."""
    events: list[object] = []
    for _ in range(1000):
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            assert exc.name in NAMES
            events.append(exc)
            return events
        events.append(event)
        if event is NEED_DATA or event is CLOSED:
            return events
    raise AssertionError("next_event never settled")


def decode_or_named_error(body: bytes) -> None:
    try:
        item = decode_item(body)
    except RemoteProtocolError as exc:
        assert exc.name is ProtocolErrorName.BAD_CBOR
        return
    assert check_data_model(item) is None


# --- properties ----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_random_frame_bodies(body: bytes) -> None:
    decode_or_named_error(body)


@FUZZ
@given(raw_cbor, st.binary(max_size=2))
def test_random_cbor(body: bytes, trailer: bytes) -> None:
    decode_or_named_error(body + trailer)


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=6), st.booleans(), st.booleans())
def test_random_streams_into_a_server(chunks: list[bytes], with_hello: bool, eof: bool) -> None:
    conn = Connection(Role.SERVER, max_frame=256)
    if with_hello:
        conn.receive_data(cbor_frame(hello_item()))
    for chunk in [*chunks, *([b""] if eof else [])]:
        conn.receive_data(chunk)
        events = drain(conn)
        if isinstance(events[-1], RemoteProtocolError):
            return


@FUZZ
@given(st.lists(raw_cbor, min_size=1, max_size=4), st.sampled_from([Role.CLIENT, Role.SERVER]))
def test_random_cbor_frames_into_a_connection(bodies: list[bytes], role: Role) -> None:
    conn = Connection(role)
    if role is Role.CLIENT:
        conn.send(Hello(version=1, client="c"))
    else:
        conn.receive_data(cbor_frame(hello_item()))
        drain(conn)
    conn.receive_data(b"".join(frame(b) for b in bodies))
    drain(conn)


@FUZZ
@given(messages, st.data())
def test_mutated_frames(message: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(unstructure_message(message)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif raw:
            del raw[pos]
    conn = Connection(Role.SERVER, max_frame=4096)
    conn.receive_data(bytes(raw))
    conn.receive_data(b"")
    drain(conn)


@FUZZ
@given(messages)
def test_round_trip(message: Message) -> None:
    """Every valid envelope survives unstructure → frame → decode → structure."""
    data = encode_frame(unstructure_message(message))
    decoder = FrameDecoder()
    decoder.receive_data(data)
    body = decoder.next_frame()
    assert body is not None
    assert structure_message(decode_item(body)) == message


@FUZZ
@given(st.integers(1 << 10, (1 << 32) - 1))
def test_oversized_lengths(length: int) -> None:
    decoder = FrameDecoder(max_frame=1000)
    decoder.receive_data(struct.pack(">I", length) + b"\x00" * 10)
    try:
        decoder.next_frame()
    except RemoteProtocolError as exc:
        assert exc.name is ProtocolErrorName.FRAME_TOO_LARGE
    else:
        raise AssertionError("an oversized frame was accepted")


@FUZZ
@given(st.integers(0, 300), st.sampled_from([b"\x81", b"\xa1\x61a", b"\xd8\x1c\x81"]))
def test_deep_nesting(depth: int, prefix: bytes) -> None:
    body = prefix * depth + b"\x00"
    try:
        decode_item(body)
    except RemoteProtocolError as exc:
        assert exc.name is ProtocolErrorName.BAD_CBOR
        assert depth > MAX_DEPTH or (depth > 0 and prefix.startswith(b"\xd8"))
    else:
        assert depth <= MAX_DEPTH and not (depth and prefix.startswith(b"\xd8"))


def test_truncation_at_every_length() -> None:
    """Cut a three-message stream anywhere, then EOF: the whole messages before the cut
    come out, then CLOSED exactly at a frame boundary, else `luod.ConnectionClosed`."""
    frames = [
        cbor_frame(hello_item()),
        cbor_frame({"kind": "request", "id": 1, "method": "m", "params": {"a": [1, 2]}}),
        cbor_frame({"kind": "request", "id": 2, "method": "n", "params": {}}),
    ]
    stream = b"".join(frames)
    boundaries = {0, len(frames[0]), len(frames[0]) + len(frames[1]), len(stream)}
    for cut in range(len(stream) + 1):
        conn = Connection(Role.SERVER)
        conn.receive_data(stream[:cut])
        conn.receive_data(b"")
        events = drain(conn)
        complete = sum(1 for b in sorted(boundaries)[1:] if b <= cut)
        assert all(isinstance(e, Hello | Request) for e in events[:complete])
        last = events[complete]
        if cut in boundaries:
            assert last is CLOSED
        else:
            assert isinstance(last, RemoteProtocolError)
            assert last.name is ProtocolErrorName.CONNECTION_CLOSED


field_names = st.sampled_from(
    ["kind", "id", "method", "params", "nfds", "result", "error", "event", "ts", "data",
     "version", "client", "server", "name", "errno", "message", "object", "fds", "x"]
)  # fmt: skip
kinds = st.sampled_from(["hello", "welcome", "request", "reply", "error", "event", "nope"])
envelope_like = st.dictionaries(field_names, data_model, max_size=7).flatmap(
    lambda d: st.builds(lambda k: {**d, "kind": k}, kinds) | st.just(d)
)


@FUZZ
@given(envelope_like)
def test_structuring_random_maps(item: dict[str, Any]) -> None:
    try:
        message = structure_message(item)
    except RemoteProtocolError as exc:
        assert exc.name is ProtocolErrorName.BAD_MESSAGE
        return
    # Whatever passes is exact: re-encoding gives back the same map (plus defaults).
    wire = unstructure_message(message)
    assert {k: v for k, v in wire.items() if k in item} == {
        k: (float(v) if k == "ts" else v) for k, v in item.items()
    }


param_names = st.sampled_from(
    ["name", "files", "labels", "limit", "timeout", "phase", "priority", "payload",
     "verbose", "extra", "token", "kind", "zzz"]
)  # fmt: skip
param_values = st.one_of(
    data_model,
    st.sampled_from(["prepare", "freeze", "memfd", 1, 2, True, 1.5]),
    st.lists(st.fixed_dictionaries({"token": st.integers(-2, 2) | st.booleans(),
                                    "kind": st.sampled_from(["memfd", "x", 1])}), max_size=2),
)  # fmt: skip
REGISTRY: MethodRegistry = make_registry()


@FUZZ
@given(
    st.sampled_from(["session.create", "echo", "nope"]),
    st.dictionaries(param_names, param_values, max_size=6),
)
def test_structuring_random_params(method: str, params: dict[str, Any]) -> None:
    request = Request(id=1, method=method, params=params)
    try:
        REGISTRY.structure(request)
    except RemoteProtocolError as exc:
        expected = {ProtocolErrorName.UNKNOWN_METHOD, ProtocolErrorName.BAD_PARAMS}
        assert exc.name in expected
        assert exc.object == method
        assert (exc.name is ProtocolErrorName.UNKNOWN_METHOD) == (method == "nope")


@FUZZ
@given(st.lists(st.sampled_from([1, 2, 3, 5, 17]), min_size=1, max_size=8), messages)
def test_chunking_is_invisible(steps: list[int], message: Message) -> None:
    """However the stream is chopped, the client sees the same events."""
    server = Connection(Role.SERVER)
    server.receive_data(cbor_frame(hello_item()))
    server.next_event()
    server.send(Welcome(version=1, server="s"))
    event = Event(event="e", ts=0.0, data={"m": unstructure_message(message)})
    data = server.send(event) * 3
    client = Connection(Role.CLIENT)
    client.send(Hello(version=1, client="c"))
    client.receive_data(cbor_frame({"kind": "welcome", "version": 1, "server": "s"}))
    assert isinstance(client.next_event(), Welcome)
    got: list[object] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = steps[i % len(steps)]
        client.receive_data(data[pos : pos + step])
        pos += step
        i += 1
        got.extend(e for e in drain(client) if e is not NEED_DATA)
    assert got == [event] * 3
