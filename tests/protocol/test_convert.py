"""The strict converter: envelopes and method parameters are structured exactly, with no
coercion, no unknown or missing keys, and errors that name the field path."""

from __future__ import annotations

from typing import Any

import pytest

from luod.ipc.convert import MethodRegistry
from luod.ipc.envelope import structure_message, unstructure_message
from luod.ipc.errors import ErrorInfo, ProtocolErrorName, RemoteProtocolError
from luod.ipc.messages import ErrorReply, Event, Hello, Reply, Request, Welcome

from .conftest import FileSpec, Phase, Priority, SessionCreate

MESSAGES = [
    Hello(version=1, client="luoctl"),
    Welcome(version=1, server="luod 0.1"),
    Request(id=0, method="m", params={}),
    Request(id=(1 << 32) - 1, method="m", params={"a": [1, {"b": None}]}, nfds=3),
    Reply(id=5, result=None),
    Reply(id=5, result={"x": [1.5, b"\x00"]}, nfds=1),
    ErrorReply(id=None, error=ErrorInfo("luod.BadCbor", "EPROTO", "bad", None)),
    ErrorReply(id=9, error=ErrorInfo("luod.SessionExists", "EEXIST", "exists", "vm1")),
    Event(event="prepare", ts=1.5, data={"update_id": 3}),
]


def bad_message(item: Any) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        structure_message(item)
    assert info.value.name is ProtocolErrorName.BAD_MESSAGE
    return info.value.message


class TestEnvelopes:
    @pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
    def test_round_trip(self, message: Any) -> None:
        wire = unstructure_message(message)
        assert next(iter(wire)) == "kind" and wire["kind"] == message.KIND
        assert "fds" not in wire
        assert structure_message(wire) == message

    def test_nfds_defaults_to_zero_on_the_wire(self) -> None:
        request = structure_message({"kind": "request", "id": 1, "method": "m", "params": {}})
        assert isinstance(request, Request) and request.nfds == 0

    def test_nfds_follows_attached_fds(self) -> None:
        assert unstructure_message(Request(id=1, method="m", params={}, fds=[4, 5]))["nfds"] == 2
        with pytest.raises(ValueError, match="nfds"):
            Request(id=1, method="m", params={}, fds=[4], nfds=2)

    @pytest.mark.parametrize(
        ("item", "needle"),
        [
            ([], "must be a map"),
            ({}, "needs a 'kind'"),
            ({"kind": 1}, "'kind' must be a str"),
            ({"kind": "bogus"}, "unknown message kind"),
            (
                {"kind": "hello", "version": True, "client": "c"},
                "expected int, got bool @ $.version",
            ),
            ({"kind": "hello", "version": 1.0, "client": "c"}, "expected int, got float"),
            ({"kind": "hello", "version": 1, "client": b"c"}, "expected str, got bytes"),
            ({"kind": "hello", "version": 1}, "required field missing @ $.client"),
            ({"kind": "hello", "version": 1, "client": "c", "x": 1}, "extra fields found (x)"),
            ({"kind": "request", "id": -1, "method": "m", "params": {}}, "outside 0..4294967295"),
            ({"kind": "request", "id": 1 << 32, "method": "m", "params": {}}, "outside"),
            ({"kind": "request", "id": 1, "method": "m", "params": []}, "expected map, got array"),
            ({"kind": "request", "id": 1, "method": "m", "params": {}, "nfds": 254}, "nfds"),
            ({"kind": "request", "id": 1, "method": "m", "params": {}, "fds": [3]}, "extra"),
            ({"kind": "reply", "id": 1}, "required field missing @ $.result"),
            ({"kind": "event", "event": "e", "ts": "1", "data": {}}, "expected float, got str"),
            ({"kind": "event", "event": "e", "ts": True, "data": {}}, "expected float, got bool"),
            ({"kind": "event", "event": "e", "ts": 1 << 60, "data": {}}, "too large"),
            (
                {
                    "kind": "error",
                    "id": None,
                    "error": {"name": "n", "errno": None, "message": "m"},
                },
                "required field missing @ $.error.object",
            ),
            (
                {"kind": "error", "id": "1", "error": {}},
                "expected int | null, got str @ $.id",
            ),
        ],
    )
    def test_refused(self, item: Any, needle: str) -> None:
        assert needle in bad_message(item)

    def test_int_timestamp_widened(self) -> None:
        """The one widening: an int `ts` (|n| <= 2**53) becomes a float."""
        event = structure_message({"kind": "event", "event": "e", "ts": 12, "data": {}})
        assert isinstance(event, Event) and type(event.ts) is float and event.ts == 12.0


class TestRegistry:
    def structure(self, registry: MethodRegistry, params: dict[str, Any]) -> object:
        return registry.structure(Request(id=1, method="session.create", params=params))

    def bad(self, registry: MethodRegistry, params: dict[str, Any]) -> str:
        with pytest.raises(RemoteProtocolError) as info:
            self.structure(registry, params)
        assert info.value.name is ProtocolErrorName.BAD_PARAMS
        assert info.value.object == "session.create"
        assert info.value.errno == "EINVAL"
        return info.value.message

    def test_full(self, registry: MethodRegistry) -> None:
        params = {
            "name": "vm1",
            "files": [{"token": 1, "kind": "memfd"}, {"token": 2, "kind": "iommufd"}],
            "labels": {"a": "b"},
            "limit": None,
            "timeout": 2,
            "phase": "freeze",
            "priority": 2,
            "payload": b"\x01",
            "verbose": True,
            "extra": {"anything": [1, "x"]},
        }
        assert self.structure(registry, params) == SessionCreate(
            name="vm1",
            files=[FileSpec(1, "memfd"), FileSpec(2, "iommufd")],
            labels={"a": "b"},
            limit=None,
            timeout=2.0,
            phase=Phase.FREEZE,
            priority=Priority.HIGH,
            payload=b"\x01",
            verbose=True,
            extra={"anything": [1, "x"]},
        )

    @pytest.mark.parametrize(
        ("params", "needle"),
        [
            ({}, "required field missing @ params.name"),
            ({"name": "a", "bogus": 1}, "extra fields found (bogus) @ params"),
            ({"name": 1}, "expected str, got int @ params.name"),
            ({"name": "a", "files": "ab"}, "expected array, got str @ params.files"),
            ({"name": "a", "files": {}}, "expected array, got map @ params.files"),
            ({"name": "a", "files": [{"token": True, "kind": "memfd"}]}, "params.files[0].token"),
            ({"name": "a", "files": [{"token": 1, "kind": "x"}]}, "params.files[0].kind"),
            (
                {"name": "a", "files": [{"token": 1}]},
                "required field missing @ params.files[0].kind",
            ),
            ({"name": "a", "labels": {"k": 1}}, "expected str, got int @ params.labels['k']"),
            ({"name": "a", "labels": [["k", "v"]]}, "expected map, got array @ params.labels"),
            ({"name": "a", "limit": "3"}, "expected int | null, got str @ params.limit"),
            ({"name": "a", "limit": True}, "expected int | null, got bool @ params.limit"),
            ({"name": "a", "limit": 3.0}, "expected int | null, got float @ params.limit"),
            ({"name": "a", "timeout": "5"}, "expected float, got str @ params.timeout"),
            ({"name": "a", "timeout": False}, "expected float, got bool"),
            ({"name": "a", "phase": "PREPARE"}, "params.phase"),
            ({"name": "a", "priority": True}, "params.priority"),
            ({"name": "a", "priority": "1"}, "params.priority"),
            ({"name": "a", "payload": "x"}, "expected bytes, got str @ params.payload"),
            ({"name": "a", "verbose": 1}, "expected bool, got int @ params.verbose"),
        ],
    )
    def test_refused(self, registry: MethodRegistry, params: dict[str, Any], needle: str) -> None:
        message = self.bad(registry, params)
        assert message.startswith("invalid params for session.create: ")
        assert needle in message

    def test_every_bad_field_reported(self, registry: MethodRegistry) -> None:
        message = self.bad(registry, {"name": 1, "limit": "x", "zzz": 0})
        assert "params.name" in message and "params.limit" in message and "zzz" in message

    def test_unknown_method(self, registry: MethodRegistry) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            registry.structure(Request(id=1, method="nope", params={}))
        assert info.value.name is ProtocolErrorName.UNKNOWN_METHOD
        assert info.value.object == "nope"
        assert "nope" in info.value.message

    def test_registration_rules(self, registry: MethodRegistry) -> None:
        assert "echo" in registry and registry.names() == ["echo", "session.create"]
        assert registry.params_class("echo") is not None
        with pytest.raises(ValueError, match="already registered"):
            registry.register("echo", SessionCreate)
        with pytest.raises(TypeError, match="attrs class"):
            registry.register("plain", dict)

    def test_decorator(self) -> None:
        import attrs

        fresh = MethodRegistry()

        @fresh.method("thing.do")
        @attrs.frozen
        class ThingDo:
            n: int

        assert fresh.structure(Request(id=1, method="thing.do", params={"n": 3})) == ThingDo(3)

    def test_unsupported_types_fail_validation(self) -> None:
        import attrs

        @attrs.frozen
        class BadKeys:
            m: dict[int, str]

        @attrs.frozen
        class FixedTuple:
            t: tuple[int, str]

        for cls in (BadKeys, FixedTuple):
            fresh = MethodRegistry()
            fresh.register("x", cls)  # cheap: no cattrs yet
            with pytest.raises(TypeError, match="parameters of 'x'"):
                fresh.validate()

    def test_validate(self, registry: MethodRegistry) -> None:
        registry.validate()


def test_daemon_method_table_validates() -> None:
    """The daemon's method table (luod.ipc.methods, owned by the daemon) only uses types
    the strict converter supports, and importing it does not load cattrs."""
    import subprocess
    import sys

    methods = pytest.importorskip("luod.ipc.methods")
    methods.METHODS.validate()
    code = "import sys, luod.ipc.methods; print('cattrs' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
