"""Methods on objects: the emulated files (memfds, iommufds, devices, VMs) luod builds and
holds for their owner until they are preserved, one by one or from a plan."""

from __future__ import annotations

import attrs

from luod.ipc.methods.table import METHODS
from luod.ipc.plans import ObjectSpec, Plan

# -- objects (`luod.ipc.plans`): emulated files luod holds for their owner ------------------


@METHODS.method("object.create", access="owner", fds_in=(0, 1))
@attrs.frozen
class ObjectCreate:
    """fds in: 0 or 1 (for memfd and guest_memfd: initial bytes, copied). Creates an
    emulated object owned by the caller, not yet preserved. Result: an object summary."""

    object: ObjectSpec


@METHODS.method("object.preserve", access="owner")
@attrs.frozen
class ObjectPreserve:
    """Preserve a created object in an outgoing session. The daemon first checks that
    everything it depends on is already preserved in the same session (dependency order),
    naming the missing dependency and the order expected. Result: {session, token, type}."""

    session: str
    token: int
    name: str


@METHODS.method("object.list", access="owner")
@attrs.frozen
class ObjectList:
    """Result: {objects: [{name, type, preserved: {session, token} | null, depends_on}]}."""


@METHODS.method("object.close", access="owner")
@attrs.frozen
class ObjectClose:
    """Drop the caller's handle on an object (preserved ones live on in their session)."""

    name: str


@METHODS.method("apply", access="owner")
@attrs.frozen
class Apply:
    """Create every object of the plan (references resolved by name, any order), then
    preserve them in the listed order, the daemon validating that order. The first
    violation stops the plan; everything it created or preserved is released again.
    Result: {sessions: [session objects]}."""

    plan: Plan


@METHODS.method("file.reclaim", access="owner")
@attrs.frozen
class FileReclaim:
    """Incoming iommufd: re-create its IOAS mappings from the retrieved memfds and have the
    kernel verify them against the preserved page tables and adopt them. Result: {token,
    reclaimed: true}."""

    session: str
    token: int
