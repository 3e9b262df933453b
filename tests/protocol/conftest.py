"""Fixtures for protocol tests: a method registry like the daemon's.

The registry's parameter classes exercise every type the strict converter supports for
daemon methods (nested attrs classes, lists, dicts, optionals, Literals, enums).
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import attrs
import pytest

from luod.ipc.convert import MethodRegistry


class Phase(enum.StrEnum):
    PREPARE = "prepare"
    FREEZE = "freeze"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class FileSpec:
    token: int
    kind: Literal["memfd", "iommufd"]


@attrs.frozen
class SessionCreate:
    name: str
    files: list[FileSpec] = attrs.field(factory=list)
    labels: dict[str, str] = attrs.field(factory=dict)
    limit: int | None = None
    timeout: float = 5.0
    phase: Phase = Phase.PREPARE
    priority: Priority = Priority.LOW
    payload: bytes = b""
    verbose: bool = False
    extra: Any = None


@attrs.frozen
class Echo:
    value: Any = None


def make_registry() -> MethodRegistry:
    registry = MethodRegistry()
    registry.register("session.create", SessionCreate)
    registry.register("echo", Echo)
    return registry


@pytest.fixture
def registry() -> MethodRegistry:
    return make_registry()
