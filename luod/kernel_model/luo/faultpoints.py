"""The fault points LUO passes before every step, shared by its update phases and its
incoming side.

Every step calls the fault hook first (`fault`, a `FaultInjector.hit` handed over by the
kernel; see `luod.kernel_model.faults` for the points and what a fault at each does).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from luod.kernel_model.faults import file_subject
from luod.kernel_model.luo.file import IncomingFile, OutgoingFile

FaultHook = Callable[[str, str, Collection[str]], None]  # (point, subject, labels)


class FaultPoints:
    """Mixin of `Luo`: the hook, called with the point and what the step works on."""

    fault: FaultHook | None

    def _hit(self, point: str, subject: str, labels: Collection[str] = ()) -> None:
        if self.fault is not None:
            self.fault(point, subject, labels)

    def _hit_file(self, point: str, f: OutgoingFile | IncomingFile) -> None:
        if self.fault is not None:
            self.fault(point, *file_subject(f.handler.file_type, f.session.name, f.token))
