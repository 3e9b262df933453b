"""Fault-injection methods, for testing a client's failure paths."""

from __future__ import annotations

import attrs

from luod.ipc.methods.table import METHODS

# -- fault injection: refused (luod.FaultsDisabled) unless luod runs with --enable-faults;
# the points and what a fault at each does: `fault.list`, luod/kernel_model/faults.py. ----


@METHODS.method("fault.arm", access="admin")
@attrs.frozen
class FaultArm:
    """Arm a named fault point: it fires `count` times (null: every time until cleared) at
    hits whose subject matches `match` (a file type, a session name, SESSION/TOKEN, or a
    release; null: any), failing that step with `errno` (a symbolic name). Arming a point
    again with the same match replaces that arm. Result: {point, count, errno, match}."""

    point: str
    count: int | None = 1
    errno: str = "EIO"
    match: str | None = None


@METHODS.method("fault.list", access="admin")
@attrs.frozen
class FaultList:
    """Result: {enabled, points: [{point, layer, after_kexec, description, consequence,
    armed: [arm]}], armed: [arm], fired: [{point, subject}] (the last 100)}."""


@METHODS.method("fault.clear", access="admin")
@attrs.frozen
class FaultClear:
    """Disarm one point, or every point when `point` is null. Result: {cleared: N}."""

    point: str | None = None
