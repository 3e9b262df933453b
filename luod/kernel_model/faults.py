"""Fault injection: the one registry of named fault points, and the injector that fires them.

Users trust a live-update agent only if every failure before the point of no return (the
kexec) leaves the machine as it was, and every failure after it is reported precisely.
This module is how that is proved: `POINTS` names every step at which the emulation can be
made to fail, once, and the code of every step calls `FaultInjector.hit(point, ...)` right
before it does its work. Tests are generated from `POINTS`, so a point added here without
a scenario fails the suite, and a point nobody hits is caught too.

The injector belongs to the harness (the daemon's host, or a test), never to a kernel: it
is handed to every kernel boot, like the kernel command line, so an armed fault survives a
kexec while nothing of the old kernel does. An armed point fires `count` times (None: until
cleared) at hits whose subject matches `match` (a file type, a session name, `SESSION/TOKEN`
or a release, see `hit`), raising `InjectedFault`, a `KernelError` whose message names the
point and the subject. What a fault at each point does to the machine is the point's
`consequence`: the contract the fault tests assert and the README repeats.
"""

from __future__ import annotations

import collections
import errno as _errno
from collections.abc import Callable, Collection
from typing import Any, Literal

import attrs

from luod.errnos import errno_name
from luod.kernel_model.errors import ERRNO_MEANINGS, KernelError

Layer = Literal["handler", "luo", "boot", "update"]


@attrs.frozen
class FaultPoint:
    name: str
    layer: Layer
    after_kexec: bool  # past the point of no return: reported, not rolled back
    description: str
    consequence: str

    def as_json(self) -> dict[str, Any]:
        return {
            "point": self.name,
            "layer": self.layer,
            "after_kexec": self.after_kexec,
            "description": self.description,
            "consequence": self.consequence,
        }


_CANCELLED = (
    "the update is cancelled automatically: state normal, every object preserved, intact "
    "and usable; the error names this point"
)

POINTS: tuple[FaultPoint, ...] = (
    # -- every op LUO calls on a file handler (match: file type, session, SESSION/TOKEN) --
    FaultPoint(
        "handler.preserve",
        "handler",
        False,
        "a file handler preserving one file (PRESERVE_FD)",
        "the request fails; nothing of that file is preserved; the session and its other "
        "files are untouched",
    ),
    FaultPoint(
        "handler.unpreserve",
        "handler",
        False,
        "a file handler unpreserving one file (file unpreserve, session close)",
        "the request fails; the file stays preserved, intact and usable (a session close "
        "stops there: the files before it stay in the session)",
    ),
    FaultPoint(
        "handler.prepare",
        "handler",
        False,
        "a file handler writing its record in the negotiated format at prepare",
        _CANCELLED,
    ),
    FaultPoint(
        "handler.freeze",
        "handler",
        False,
        "a file handler freezing one file (refreshing what may still move)",
        _CANCELLED,
    ),
    FaultPoint(
        "handler.cancel",
        "handler",
        False,
        "a file handler throwing its prepared record away during a cancel",
        "cancel ops cannot fail in Linux: the complaint is recorded (the cancel's `rollback` "
        "list), the rollback still runs for every file, the error still names the first cause",
    ),
    FaultPoint(
        "handler.unfreeze",
        "handler",
        False,
        "a file handler unfreezing one file during a cancel",
        "as handler.cancel: recorded, the rollback goes on, the first cause is reported",
    ),
    FaultPoint(
        "handler.retrieve",
        "handler",
        True,
        "a file handler restoring one file in the next kernel (RETRIEVE_FD)",
        "that file fails to retrieve, every time (the error is sticky) and is listed as "
        "damage; the session's other files and every other session retrieve normally",
    ),
    FaultPoint(
        "handler.can_finish",
        "handler",
        True,
        "a file handler asked whether its file may finish",
        "a veto: the finish fails and changes nothing; a later finish succeeds",
    ),
    FaultPoint(
        "handler.finish",
        "handler",
        True,
        "a file handler releasing one file's preserved state at finish",
        "the session still finishes with its other files; what that file held stays "
        "reserved until the next boot, listed as damage",
    ),
    # -- LUO's and KHO's own steps (match: the target release) --
    FaultPoint(
        "luo.prepare",
        "luo",
        False,
        "LUO writing its session and file tables at prepare",
        _CANCELLED,
    ),
    FaultPoint(
        "kho.finalize",
        "luo",
        False,
        "KHO finalizing the handover (the end of freeze)",
        _CANCELLED,
    ),
    # -- the next kernel's boot (match: the release booting) --
    FaultPoint(
        "boot.kho-parse",
        "boot",
        True,
        "the next kernel parsing the KHO handover",
        "a cold boot (its reason names this point): every preserved object is lost, listed "
        "per session as damage",
    ),
    FaultPoint(
        "boot.luo-root",
        "boot",
        True,
        "the next kernel reading the LUO root",
        "a kernel panic: every session is lost (listed as damage); `boot --cold` recovers",
    ),
    FaultPoint(
        "luo.deserialize",
        "boot",
        True,
        "the next kernel's LUO device deserializing the incoming sessions at first open",
        "every open of the LUO device fails with EIO: every session is unusable (listed as "
        "damage); `boot --cold` recovers",
    ),
    # -- the daemon's orchestration of an update (match: the target release) --
    FaultPoint(
        "update.load",
        "update",
        False,
        "the update staging the target kernel image",
        "the update fails before anything changed; the loaded image is as before",
    ),
    FaultPoint(
        "update.check",
        "update",
        False,
        "the update checking the target can read everything preserved",
        "the update fails before anything changed; the loaded image is as before",
    ),
    FaultPoint(
        "update.prepare-barrier",
        "update",
        False,
        "the update waiting for the participants to acknowledge prepare",
        _CANCELLED,
    ),
    FaultPoint(
        "update.freeze-barrier",
        "update",
        False,
        "the update waiting for the participants to acknowledge freeze",
        _CANCELLED,
    ),
    FaultPoint(
        "update.kexec-start",
        "update",
        False,
        "the update starting the kexec, everything frozen (the last step before the point "
        "of no return)",
        _CANCELLED,
    ),
    FaultPoint(
        "update.restore",
        "update",
        True,
        "luod restoring its own state (the session ownership table) in the next kernel",
        "the sessions are restored but their owners are not: only root may take them, each "
        "listed as damage",
    ),
)

BY_NAME: dict[str, FaultPoint] = {p.name: p for p in POINTS}
assert len(BY_NAME) == len(POINTS), "fault point names are unique"


class InjectedFault(KernelError):
    """An armed fault point fired. Its message names the point and the subject."""

    default_errno = _errno.EIO

    def __init__(self, point: str, subject: str, *, errno: int | None = None) -> None:
        super().__init__(f"injected fault at {point} ({subject})", errno=errno, obj=subject)
        self.point = point
        self.subject = subject


class UnknownFaultPoint(KernelError):
    default_errno = _errno.ENOENT


class BadFault(KernelError):
    """An arm request the injector cannot honour (a bad count or errno)."""


@attrs.define
class Arm:
    point: str
    count: int | None  # times left; None: every time until cleared
    errno: int
    match: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "count": self.count,
            "errno": errno_name(self.errno),
            "match": self.match,
        }


@attrs.frozen
class Fired:
    point: str
    subject: str

    def as_json(self) -> dict[str, str]:
        return {"point": self.point, "subject": self.subject}


def point(name: str) -> FaultPoint:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownFaultPoint(
            f"no fault point {name!r} (known: {', '.join(BY_NAME)})", obj=name
        ) from None


def parse_errno(value: int | str) -> int:
    """An errno by number or symbolic name, restricted to the model's errno table."""
    code = getattr(_errno, value, None) if isinstance(value, str) else value
    if not isinstance(code, int) or code not in ERRNO_MEANINGS:
        allowed = ", ".join(sorted(errno_name(e) for e in ERRNO_MEANINGS))
        raise BadFault(f"errno {value!r} is not one the model returns ({allowed})")
    return code


class FaultInjector:
    """Armed points, plus a record of every point reached and every fault fired."""

    FIRED_HISTORY = 100

    def __init__(self) -> None:
        self.armed: list[Arm] = []
        self.reached: collections.Counter[str] = collections.Counter()
        self.fired: collections.deque[Fired] = collections.deque(maxlen=self.FIRED_HISTORY)
        self.on_fire: Callable[[Fired], None] | None = None  # the daemon publishes an event

    def arm(
        self,
        name: str,
        *,
        count: int | None = 1,
        errno: int | str = _errno.EIO,
        match: str | None = None,
    ) -> Arm:
        """Arm `name`; arming a point again with the same `match` replaces that arm."""
        point(name)
        if count is not None and count < 1:
            raise BadFault(f"count must be at least 1 (or null: every time), not {count}")
        arm = Arm(name, count, parse_errno(errno), match)
        self.armed = [a for a in self.armed if (a.point, a.match) != (name, match)]
        self.armed.append(arm)
        return arm

    def clear(self, name: str | None = None) -> int:
        """Disarm one point (every arm of it) or all; returns how many arms went."""
        if name is not None:
            point(name)
        before = len(self.armed)
        self.armed = [a for a in self.armed if name is not None and a.point != name]
        return before - len(self.armed)

    def hit(self, name: str, subject: str, labels: Collection[str] = ()) -> None:
        """The step `name` is about to run on `subject`: raise if an arm matches.

        An arm with a `match` fires only when `match` is the subject or one of its
        `labels` (for a file: its type, its session and `SESSION/TOKEN`, the token in
        decimal or hex)."""
        assert name in BY_NAME, f"fault point {name!r} is not in the registry"
        self.reached[name] += 1
        for arm in self.armed:
            if arm.point != name:
                continue
            if arm.match is not None and arm.match != subject and arm.match not in labels:
                continue
            if arm.count is not None:
                arm.count -= 1
                if arm.count == 0:
                    self.armed.remove(arm)
            fired = Fired(name, subject)
            self.fired.append(fired)
            if self.on_fire is not None:
                self.on_fire(fired)
            raise InjectedFault(name, subject, errno=arm.errno)

    def as_json(self) -> dict[str, Any]:
        return {
            "points": [
                {**p.as_json(), "armed": [a.as_json() for a in self.armed if a.point == p.name]}
                for p in POINTS
            ],
            "armed": [a.as_json() for a in self.armed],
            "fired": [f.as_json() for f in self.fired],
        }


def file_subject(file_type: str, session: str, token: int) -> tuple[str, tuple[str, ...]]:
    """How a file names itself to `hit`: `memfd vm1/0x1`, labelled by type, session and
    `SESSION/TOKEN` with the token in decimal and in hex."""
    return (
        f"{file_type} {session}/{token:#x}",
        (file_type, session, f"{session}/{token}", f"{session}/{token:#x}"),
    )
