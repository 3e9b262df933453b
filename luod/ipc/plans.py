"""Objects and plans as the protocol describes them: what `object.create` and `apply` take.

An object is an emulated file luod creates and holds for its owner by name (guest RAM, an
iommufd mapping it, a vfio-pci device bound to that, a KVM VM and its guest_memfd); a plan
is a list of sessions, each with the objects to preserve in it, in order. References
between objects are by name. luoctl reads plans from JSON or TOML into these shapes.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["IommuMap", "ObjectSpec", "ObjectType", "Plan", "PlanSession"]

ObjectType = Literal["memfd", "iommufd", "vfio-pci", "kvm-vm", "guest_memfd"]


@attrs.frozen
class IommuMap:
    """One memfd mapped into an iommufd's IOAS: at `iova` (default: after the previous)."""

    memfd: str
    iova: int | None = None


@attrs.frozen
class ObjectSpec:
    """One object of a plan or of `object.create`. Which fields apply depends on `type`:
    memfd: size, page_size (4096, 2M or 1G: 2M and 1G take huge pages from the hugetlb
    pools); iommufd: maps; vfio-pci: iommufd, bdf, irq; kvm-vm: vm_type; guest_memfd: vm,
    size. `token` is used by `apply` only."""

    name: str
    type: ObjectType
    token: int | None = None
    size: int | None = None
    page_size: int = 4096
    maps: list[IommuMap] = attrs.field(factory=list)
    iommufd: str | None = None
    bdf: str | None = None
    irq: bool = False
    vm: str | None = None
    vm_type: int = 0


@attrs.frozen
class PlanSession:
    name: str
    object: list[ObjectSpec] = attrs.field(factory=list)


@attrs.frozen
class Plan:
    session: list[PlanSession] = attrs.field(factory=list)
