"""Hostile input against a running daemon: random and mutated frames, truncation, oversized
lengths, deep nesting, forbidden tags, wrong types. Every case ends in an error reply or a
closed connection, and a well-behaved client is served throughout."""

from __future__ import annotations

import struct
from pathlib import Path

import cbor2
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luod.ipc.async_client import open_client

from .conftest import Running, running_luod

HELLO = cbor2.dumps({"kind": "hello", "version": 1, "client": "fuzz"})


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


requests = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["request", "reply", "event", "hello", 7, None]),
        "id": st.one_of(st.integers(-5, 2**33), st.text(max_size=3), st.booleans()),
        "method": st.one_of(
            st.sampled_from(["status", "session.create", "memfd.preserve", "update", "nope"]),
            st.integers(),
        ),
        "params": st.one_of(
            st.dictionaries(
                st.sampled_from(["name", "token", "session", "target", "extra", "size"]),
                st.one_of(st.text(max_size=70), st.integers(-1, 2**65), st.booleans(), st.none()),
                max_size=4,
            ),
            st.lists(st.integers(), max_size=3),
        ),
    }
)

payloads = st.one_of(
    st.binary(max_size=200).map(frame),
    st.binary(max_size=64),  # not even a frame
    requests.map(lambda r: frame(cbor2.dumps(r))),
    st.integers(1 << 20, 1 << 32 - 1).map(lambda n: struct.pack(">I", n) + b"\xa0"),  # huge
    st.integers(40, 600).map(lambda d: frame(nested(d))),  # deep nesting
    st.sampled_from(
        [
            frame(b"\xd8\x1c\x81\xd8\x1d\x00"),  # value sharing tags 28/29
            frame(b"\x9f\x01\xff"),  # indefinite length
            frame(b"\xa2\x61a\x01\x61a\x02"),  # duplicate keys
            frame(
                cbor2.dumps({"kind": "request", "id": 1, "method": "status", "params": {}})
                + b"\x00"
            ),
            frame(b"\xc1\x1a\x00\x00\x00\x01"),  # a tag (epoch datetime)
        ]
    ),
)


async def attack(path: str, hello: bool, data: bytes) -> bytes:
    """Send one hostile payload; return whatever comes back before the daemon closes or a
    deadline passes (a daemon waiting for the rest of a frame is a correct answer too)."""
    stream = await trio.open_unix_socket(path)
    got = b""
    async with stream:
        with trio.move_on_after(2):
            if hello:
                await stream.send_all(frame(HELLO))
            await stream.send_all(data)
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                got += chunk
    return got


def replies(data: bytes) -> list[dict[str, object]]:
    out = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        out.append(cbor2.loads(data[4 : 4 + n]))
        data = data[4 + n :]
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hello=st.booleans(), data=payloads)
async def test_hostile_input_never_hurts_others(tmp_path: Path, hello: bool, data: bytes) -> None:
    async with running_luod(tmp_path) as luod:
        await one_attack(luod, hello, data)


async def one_attack(luod: Running, hello: bool, data: bytes) -> None:
    async with open_client(str(luod.path), "bystander") as bystander:
        answer = replies(await attack(str(luod.path), hello, data))
        # a client connected throughout is still served
        assert (await bystander.call("status")).result["state"] == "normal"
    for message in answer:
        assert message["kind"] in ("welcome", "error", "reply"), message
        if message["kind"] == "error":
            error = message["error"]
            assert isinstance(error, dict) and str(error["name"]).startswith("luod.")
    async with open_client(str(luod.path), "bystander") as client:
        assert (await client.call("status")).result["state"] == "normal"


async def test_oversized_frame_is_refused_before_buffering(luod: Running) -> None:
    answer = replies(await attack(str(luod.path), True, struct.pack(">I", 1 << 30)))
    assert answer[-1]["kind"] == "error"
    assert answer[-1]["error"]["name"] == "luod.FrameTooLarge"  # type: ignore[index]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"name": 5}, "name"), ({"name": "x", "bogus": 1}, "bogus"), ({}, "name")],
)
async def test_bad_params_name_the_field(
    luod: Running, params: dict[str, object], field: str
) -> None:
    from luod.ipc.errors import RemoteError

    async with open_client(str(luod.path), "c") as client:
        with pytest.raises(RemoteError) as info:
            await client.call("session.create", params)
        assert info.value.info.name == "luod.BadParams"
        assert field in info.value.info.message
        with pytest.raises(RemoteError) as info:
            await client.call("no.such.method", {})
        assert info.value.info.name == "luod.UnknownMethod"
        assert (await client.call("status")).result["state"] == "normal"  # still served
