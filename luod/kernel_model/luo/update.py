"""The global update phases of LUO: prepare, freeze and cancel (the v3/v4 model, kept for
the emulator's global-state mode; reference/kernel.md §1.2, §9).

prepare writes every record in the formats the target kernel reads (negotiated per layer)
and the LUO tables; freeze freezes every file oldest first and finalizes KHO; cancel goes
back to NORMAL from either. Invariants:
- a failure inside prepare or freeze runs the cancel path before the error is returned, so
  the state is NORMAL again and every file is as it was before prepare;
- rollback never stops halfway: the ops a cancel runs (a handler's unfreeze and cancel)
  cannot fail in Linux, so an error from one is recorded in `rollback_errors` and the
  rollback goes on with every other file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from luod.kernel_model import catalog
from luod.kernel_model.errors import KernelError, WrongState
from luod.kernel_model.images import KernelImage
from luod.kernel_model.luo import serialize
from luod.kernel_model.luo.faultpoints import FaultPoints
from luod.kernel_model.luo.file import KernelServices, OutgoingFile
from luod.kernel_model.luo.flb import FlbRegistry
from luod.kernel_model.luo.serialize import FileRecord, FlbRecord, SessionRecord
from luod.kernel_model.luo.session import OutgoingSession
from luod.kernel_model.luo.state import Limits, LuoState
from luod.kernel_model.negotiate import negotiate


def catalog_formats(layer: str) -> list[str]:
    return [c for c, lay in catalog.FORMAT_LAYERS.items() if lay == layer]


class UpdatePhases(FaultPoints):
    """Mixin of `Luo`: the phases that take the outgoing side to the kexec and back."""

    kernel: KernelServices
    image: KernelImage
    limits: Limits
    liveupdate_number: int
    state: LuoState
    outgoing: dict[str, OutgoingSession]
    flbs: FlbRegistry
    target: KernelImage | None
    formats: dict[str, str]
    rollback_errors: list[KernelError]  # complaints during the last cancel
    _written: serialize.WrittenLuo | None

    def _files(self) -> Iterator[OutgoingFile]:
        for session in self.outgoing.values():
            yield from session.files

    def _rollback(self, point: str, f: OutgoingFile, op: Callable[[OutgoingFile], None]) -> None:
        """Run a rollback op that Linux gives no way to fail: a complaint (an injected
        fault, or an error from the op) is recorded and the rollback goes on."""
        try:
            self._hit_file(point, f)
        except KernelError as exc:
            self.rollback_errors.append(exc)
        try:
            op(f)
        except KernelError as exc:
            self.rollback_errors.append(exc)

    def layers_in_use(self) -> dict[str, list[str]]:
        """Each layer the next kernel must read, with the formats implemented for it."""
        layers: dict[str, list[str]] = {
            catalog.KHO: catalog_formats(catalog.KHO),
            catalog.LUO: list(serialize.ROOT_FORMATS),
        }
        for f in self._files():
            layers[f.handler.layer] = list(f.handler.formats)
        for compatible in self.flbs.outgoing:
            layers[catalog.FORMAT_LAYERS.get(compatible, f"flb:{compatible}")] = [compatible]
        return layers

    def prepare(self, target: KernelImage) -> None:
        """Write every record in the formats `target` reads; NORMAL -> PREPARED."""
        if self.state is not LuoState.NORMAL:
            raise WrongState(f"prepare needs state normal, not {self.state.value}")
        chosen = negotiate(self.image, target, self.layers_in_use())
        prepared: list[OutgoingFile] = []
        try:
            for f in self._files():
                self._hit_file("handler.prepare", f)
                f.compatible = chosen[f.handler.layer]
                f.data = f.handler.prepare(f, f.compatible)
                prepared.append(f)
            self._hit("luo.prepare", target.release)
            limits = self.limits
            self._written = serialize.write(
                self.kernel.kho_out,
                self.kernel.memory,
                self.liveupdate_number + 1,
                [
                    SessionRecord(
                        s.name,
                        tuple(
                            FileRecord(f.compatible or "", f.data or 0, f.token) for f in s.files
                        ),
                    )
                    for s in self.outgoing.values()
                ],
                [FlbRecord(c, s.data, s.count) for c, s in self.flbs.outgoing.items()],
                compatible=chosen[catalog.LUO],
                session_pages=16 if limits.max_sessions is not None else None,
                file_pages=2 if limits.max_files_per_session is not None else None,
            )
            self.kernel.kho_out.set_format(chosen[catalog.KHO])
        except BaseException:
            self.rollback_errors = []
            self._discard_records(prepared)
            raise
        self.target = target
        self.formats = chosen
        self.state = LuoState.PREPARED

    def freeze(self) -> None:
        """Freeze every file oldest first, then finalize KHO; PREPARED -> FROZEN.

        Any failure unfreezes what was frozen and cancels the whole update."""
        if self.state is not LuoState.PREPARED:
            raise WrongState(f"freeze needs state prepared, not {self.state.value}")
        try:
            for f in self._files():
                self._hit_file("handler.freeze", f)
                f.handler.freeze(f)
                f.frozen = True
            self._hit("kho.finalize", self.target.release if self.target else self.image.release)
            self.kernel.kho_out.finalize()
        except BaseException:
            self.cancel()
            raise
        self.state = LuoState.FROZEN

    def cancel(self) -> None:
        """Back to NORMAL from PREPARED or FROZEN; every file stays preserved and usable."""
        if self.state not in (LuoState.PREPARED, LuoState.FROZEN):
            raise WrongState(f"cancel needs state prepared or frozen, not {self.state.value}")
        self.rollback_errors = []
        for f in reversed(list(self._files())):
            if f.frozen:
                self._rollback("handler.unfreeze", f, f.handler.unfreeze)
                f.frozen = False
        if self.kernel.kho_out.finalized:
            self.kernel.kho_out.abort()
        self._discard_records([f for f in self._files() if f.data is not None])
        self.target = None
        self.formats = {}
        self.state = LuoState.NORMAL

    def _discard_records(self, prepared: list[OutgoingFile]) -> None:
        for f in reversed(prepared):
            self._rollback("handler.cancel", f, f.handler.cancel)
            f.data = None
            f.compatible = None
        if self._written is not None:
            serialize.discard(self.kernel.kho_out, self._written)
            self._written = None
