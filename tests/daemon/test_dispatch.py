"""The dispatcher and the method table agree: one handler per method, checked at start-up."""

from __future__ import annotations

import pytest

from luod.daemon.api import GROUPS
from luod.daemon.dispatch import Dispatcher, MethodGroup
from luod.ipc.methods import METHODS


def test_handlers_match_the_method_table_exactly() -> None:
    dispatcher = Dispatcher(GROUPS)
    assert sorted(dispatcher.handlers) == METHODS.names()


def test_a_method_without_a_handler_is_refused_at_start_up() -> None:
    groups = [g if "status" not in g.handlers else _without(g, "status") for g in GROUPS]
    with pytest.raises(ValueError, match="no handler for \\['status'\\]"):
        Dispatcher(groups)


def test_a_handler_twice_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="handled in two groups: status"):
        Dispatcher([*GROUPS, _only(GROUPS, "status")])


def test_a_handler_for_no_method_is_refused() -> None:
    group = MethodGroup("test")
    handler = next(iter(GROUPS[0].handlers.values()))
    with pytest.raises(ValueError, match="not in the method table"):
        group("no.such.method")(handler)


def _without(group: MethodGroup, method: str) -> MethodGroup:
    copy = MethodGroup(group.name)
    copy.handlers = {k: v for k, v in group.handlers.items() if k != method}
    return copy


def _only(groups: tuple[MethodGroup, ...], method: str) -> MethodGroup:
    copy = MethodGroup("extra")
    copy.handlers = {method: next(g.handlers[method] for g in groups if method in g.handlers)}
    return copy
