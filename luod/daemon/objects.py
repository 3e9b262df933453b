"""Objects: emulated files luod creates and holds for a client, by name, until preserved.

A VMM builds guest RAM, an iommufd mapping it, devices bound to that iommufd, a VM and its
guest_memfd, then preserves them into a session in dependency order. luod holds each
object as an fd of its own (userspace holds fds, the kernel only files), keyed by the
owner's uid and the object's name.

Dependency order is validated here, before the kernel is called: every object an object
depends on must already be preserved in the same session. The error names the object, the
missing dependency, and an order that works. The kernel's handlers check again.

`apply` runs a whole plan: create everything (references by name, in any order), then
preserve in the plan's order; the first violation releases everything the plan made.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from luod.daemon.errors import DaemonError
from luod.daemon.memfd_bridge import copy_fd_into, reading_source
from luod.ipc.plans import ObjectSpec, Plan
from luod.kernel_model.iommufd.file import IommufdFile
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.kvm.file import GuestMemfdFile, KvmVmFile
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.vfio_pci.file import VfioDeviceFile
from luod.kernel_model.vfs import File

# Per type, the spec fields naming the objects it depends on.
DEPENDENCY_FIELDS: dict[str, Callable[[ObjectSpec], list[str]]] = {
    "memfd": lambda s: [],
    "kvm-vm": lambda s: [],
    "iommufd": lambda s: [m.memfd for m in s.maps],
    "vfio-pci": lambda s: [s.iommufd] if s.iommufd else [],
    "guest_memfd": lambda s: [s.vm] if s.vm else [],
}
DEPENDENCY_TYPES = {"iommufd": "memfd", "vfio-pci": "iommufd", "guest_memfd": "kvm-vm"}


@attrs.define(eq=False)
class HeldObject:
    name: str
    type: str
    owner: int
    file: File
    fd: int
    depends_on: list[str]
    preserved: tuple[str, int] | None = None  # (session, token)

    def as_json(self) -> dict[str, Any]:
        where = None
        if self.preserved is not None:
            where = {"session": self.preserved[0], "token": self.preserved[1]}
        return {
            "name": self.name,
            "type": self.type,
            "preserved": where,
            "depends_on": self.depends_on,
        }


def _bad(name: str, message: str, obj: str, code: int = errno.EINVAL) -> DaemonError:
    return DaemonError(name, message, errno=code, obj=obj)


# Device types (iommufd, vfio-pci) plug in here: type -> factory(kernel, spec, resolve).
Factory = Callable[[Kernel, ObjectSpec, Callable[[str], File]], File]
DEVICE_FACTORIES: dict[str, Factory] = {}


class ObjectTable:
    def __init__(self) -> None:
        self.objects: dict[tuple[int, str], HeldObject] = {}

    def clear(self) -> None:
        """A kexec or power cycle ended the process that held them."""
        self.objects.clear()

    def of(self, uid: int) -> Iterator[HeldObject]:
        return (o for (u, _), o in self.objects.items() if u == uid)

    def get(self, uid: int, name: str) -> HeldObject:
        obj = self.objects.get((uid, name))
        if obj is None:
            raise _bad("NoSuchObject", f"no object {name!r}", name, errno.ENOENT)
        return obj

    # -- creation ---------------------------------------------------------------------------

    def create(self, kernel: Kernel, uid: int, spec: ObjectSpec, data_fd: int | None) -> HeldObject:
        if (uid, spec.name) in self.objects:
            raise _bad("ObjectExists", f"object {spec.name!r} exists", spec.name, errno.EEXIST)
        depends = DEPENDENCY_FIELDS[spec.type](spec)
        for dep in depends:
            have = self.get(uid, dep)
            want = DEPENDENCY_TYPES[spec.type]
            if have.type != want:
                raise _bad(
                    "BadReference",
                    f"{spec.type} {spec.name!r} refers to {dep!r}, a {have.type}, not a {want}",
                    spec.name,
                )
        file = self._make(kernel, uid, spec)
        fd = kernel.install(file)
        obj = HeldObject(spec.name, spec.type, uid, file, fd, depends)
        try:
            if isinstance(file, MemfdFile):
                if spec.size is not None:
                    file.truncate(spec.size)
                if data_fd is not None:
                    with reading_source(f"object {spec.name!r}"):
                        copy_fd_into(file, data_fd, spec.size)
        except BaseException:
            kernel.close(fd)
            raise
        self.objects[(uid, spec.name)] = obj
        return obj

    def _make(self, kernel: Kernel, uid: int, spec: ObjectSpec) -> File:
        if spec.type == "memfd":
            return kernel.new_memfd(spec.name, page_size=spec.page_size)
        if spec.type == "kvm-vm":
            return KvmVmFile(spec.vm_type)
        if spec.type == "guest_memfd":
            vm = self.get(uid, spec.vm or "").file
            assert isinstance(vm, KvmVmFile)
            return GuestMemfdFile(kernel.memory, kernel.mm, vm)
        factory = DEVICE_FACTORIES.get(spec.type)
        if factory is None:
            raise _bad(
                "UnsupportedType", f"objects of type {spec.type!r} are not available", spec.name
            )
        return factory(kernel, spec, lambda n: self.get(uid, n).file)

    def close(self, kernel: Kernel, uid: int, name: str) -> None:
        obj = self.get(uid, name)
        dependents = [o.name for o in self.of(uid) if name in o.depends_on]
        if dependents:
            raise _bad(
                "ObjectInUse",
                f"object {name!r} is used by {', '.join(dependents)}: close those first",
                name,
                errno.EBUSY,
            )
        del self.objects[(uid, name)]
        kernel.close(obj.fd)

    # -- dependency order ---------------------------------------------------------------------

    def order_for(self, uid: int, name: str) -> list[str]:
        """Dependencies first, then `name`: an order in which preserving works."""
        out: list[str] = []

        def visit(n: str) -> None:
            for dep in self.get(uid, n).depends_on:
                visit(dep)
            if n not in out:
                out.append(n)

        visit(name)
        return out

    def check_order(self, uid: int, name: str, session: str) -> None:
        obj = self.get(uid, name)
        for dep_name in obj.depends_on:
            dep = self.get(uid, dep_name)
            if dep.preserved is None:
                order = ", ".join(self.order_for(uid, name))
                raise _bad(
                    "DependencyNotPreserved",
                    f"cannot preserve {obj.type} {name!r} before {dep.type} {dep_name!r}, "
                    f"which it depends on; preserve in the order: {order}",
                    name,
                    errno.ENOENT,
                )
            if dep.preserved[0] != session:
                raise _bad(
                    "DependencyInOtherSession",
                    f"{obj.type} {name!r} depends on {dep.type} {dep_name!r}, which is "
                    f"preserved in session {dep.preserved[0]!r}, not in {session!r}",
                    name,
                    errno.ENOENT,
                )

    # -- plans ----------------------------------------------------------------------------------

    @staticmethod
    def validate_plan(plan: Plan) -> list[ObjectSpec]:
        specs: dict[str, ObjectSpec] = {}
        for session in plan.session:
            for spec in session.object:
                if spec.name in specs:
                    raise _bad("BadPlan", f"object name {spec.name!r} is used twice", spec.name)
                if spec.token is None:
                    raise _bad("BadPlan", f"object {spec.name!r} has no token", spec.name)
                specs[spec.name] = spec
        for spec in specs.values():
            for dep in DEPENDENCY_FIELDS[spec.type](spec):
                if dep not in specs:
                    raise _bad(
                        "BadPlan", f"{spec.type} {spec.name!r} refers to unknown {dep!r}", spec.name
                    )
        # creation order: every object after what it refers to (references in any order)
        ordered: list[ObjectSpec] = []
        placed: set[str] = set()

        def place(spec: ObjectSpec, path: tuple[str, ...]) -> None:
            if spec.name in placed:
                return
            if spec.name in path:
                raise _bad("BadPlan", f"plan refers in a cycle: {' -> '.join(path)}", spec.name)
            for dep in DEPENDENCY_FIELDS[spec.type](spec):
                place(specs[dep], (*path, spec.name))
            placed.add(spec.name)
            ordered.append(spec)

        for spec in specs.values():
            place(spec, ())
        return ordered


def _make_iommufd(kernel: Kernel, spec: ObjectSpec, resolve: Callable[[str], File]) -> File:
    iommufd = IommufdFile(kernel.machine, kernel.mm)
    iova = 0
    try:
        for m in spec.maps:
            memfd = resolve(m.memfd)
            assert isinstance(memfd, MemfdFile)
            at = iova if m.iova is None else m.iova
            iommufd.map_file(memfd, iova=at)
            iova = at + memfd.size
    except BaseException:
        iommufd.release()
        raise
    return iommufd


def _make_vfio(kernel: Kernel, spec: ObjectSpec, resolve: Callable[[str], File]) -> File:
    if not spec.bdf:
        raise _bad("BadObject", f"vfio-pci {spec.name!r} needs a bdf", spec.name)
    device = VfioDeviceFile(kernel.machine, spec.bdf)
    iommufd = resolve(spec.iommufd or "")
    assert isinstance(iommufd, IommufdFile)
    device.bind(iommufd)
    device.set_irq(spec.irq)
    return device


DEVICE_FACTORIES.update({"iommufd": _make_iommufd, "vfio-pci": _make_vfio})
