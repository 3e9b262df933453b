"""The method table's shape: what the protocol says about each method besides its params.

`MethodTable` is the one table every side derives from: the daemon's dispatcher (its
handlers must match the table exactly, checked at start-up), luoctl's commands (each names
the entry it calls) and the documentation. Each entry (`MethodSpec`) carries the method's
name, its parameter class (structured by the strict converter through a
`MethodRegistry`), how many fds travel with the request and the reply, whether the method
waits (barriers, deadlines: the daemon runs it as a task of its own), and who may call it
(`access`, CLI.md "Who may call what"; the daemon's dispatcher enforces `admin` from it).

Registering does not import cattrs, so `luoctl` imports the table for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import attrs

from luod.ipc.convert import MethodRegistry
from luod.ipc.messages import Request

__all__ = ["ACCESS", "Access", "MethodSpec", "MethodTable"]

_T = TypeVar("_T")

Access = Literal["anyone", "owner", "admin"]
ACCESS: tuple[Access, ...] = ("anyone", "owner", "admin")
"""anyone who can open the socket; the owner of the sessions or objects concerned (anyone
for their own); admin: root, luod's own uid or a member of `luod --admin-group`."""


@attrs.frozen
class MethodSpec:
    """One method of the protocol."""

    name: str
    params: type[Any]
    access: Access
    fds_in: tuple[int, int] = (0, 0)
    """How many fds a request carries: at least, at most (fds sent to a method taking
    none are `luod.BadMessage`, and the daemon closes the connection)."""
    fds_out: int = 0
    """How many fds a successful reply carries."""
    waits: bool = False
    """Whether it waits (for participants, deadlines) rather than answering at once."""

    def fds_problem(self, count: int) -> str | None:
        """Why `count` fds do not fit this method's request, or None if they do."""
        low, high = self.fds_in
        if high == 0 or low <= count <= high:
            return None
        words = {0: "no", 1: "one"}
        if low == high:
            return f"{self.name} needs exactly {words.get(low, low)} fd, got {count}"
        return f"{self.name} takes at most {words.get(high, high)} fd"


class MethodTable:
    """Method names to their `MethodSpec`, and the structuring of their params."""

    def __init__(self) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._registry = MethodRegistry()

    def method(
        self,
        name: str,
        *,
        access: Access,
        fds_in: tuple[int, int] = (0, 0),
        fds_out: int = 0,
        waits: bool = False,
    ) -> Callable[[type[_T]], type[_T]]:
        """Class decorator registering `cls` as the parameter class of method `name`."""

        def register(cls: type[_T]) -> type[_T]:
            if access not in ACCESS:
                raise ValueError(f"{name}: access {access!r} is not one of {ACCESS}")
            self._registry.register(name, cls)
            self._specs[name] = MethodSpec(name, cls, access, fds_in, fds_out, waits)
            return cls

        return register

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> MethodSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[MethodSpec]:
        return iter(self._specs.values())

    def get(self, name: str) -> MethodSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        """Registered method names, sorted."""
        return sorted(self._specs)

    def validate(self) -> None:
        """Build every structuring hook now (see `MethodRegistry.validate`)."""
        self._registry.validate()

    def structure(self, request: Request) -> object:
        """`request.params` as the method's parameter class (see
        `MethodRegistry.structure` for the errors)."""
        return self._registry.structure(request)
