"""The v3/v4 global-state selftests (reference/kernel.md §6.3), on the global model."""

from __future__ import annotations

import pytest

from luod.kernel_model.errors import KernelError
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.luo.file import OutgoingFile
from luod.kernel_model.memfd.handler import MemfdHandler

from .conftest import new_memfd, opened, update


def test_state_normal(kernel: Kernel) -> None:
    assert kernel.state == "normal"


def test_state_prepared_then_cancel(kernel: Kernel) -> None:
    kernel.prepare()
    assert kernel.state == "prepared"
    kernel.cancel()
    assert kernel.state == "normal"


def test_state_frozen_then_cancel(kernel: Kernel) -> None:
    kernel.prepare()
    kernel.freeze()
    assert kernel.state == "frozen"
    kernel.cancel()
    assert kernel.state == "normal"


@pytest.mark.parametrize(
    ("event", "state"),
    [("freeze", "normal"), ("cancel", "normal"), ("finish", "normal"), ("finish", "prepared")],
)
def test_events_in_the_wrong_state(kernel: Kernel, event: str, state: str) -> None:
    if state == "prepared":
        kernel.prepare()
    with pytest.raises(KernelError) as info:
        getattr(kernel, event)()
    assert info.value.errno_name == "EINVAL"
    assert kernel.state == state


def test_kexec_needs_frozen(kernel: Kernel) -> None:
    with pytest.raises(KernelError) as info:
        kernel.kexec()
    assert info.value.errno_name == "EINVAL"
    kernel.prepare()
    with pytest.raises(KernelError):
        kernel.kexec()
    assert kernel.state == "prepared"


class FailingMemfdHandler(MemfdHandler):
    """The memfd handler, failing at `fail_at` for token `fail_token` only."""

    fail_at = "prepare"
    fail_token = 2

    def prepare(self, f: OutgoingFile, compatible: str) -> int:
        if self.fail_at == "prepare" and f.token == self.fail_token:
            raise KernelError("refusing to prepare", obj=f"token {f.token}")
        return super().prepare(f, compatible)

    def freeze(self, f: OutgoingFile) -> None:
        if self.fail_at == "freeze" and f.token == self.fail_token:
            raise KernelError("refusing to freeze", obj=f"token {f.token}")
        super().freeze(f)


@pytest.mark.parametrize("fail_at", ["prepare", "freeze"])
def test_failing_handler_cancels_everything(kernel: Kernel, fail_at: str) -> None:
    """prepare_fail: the update is cancelled automatically; after the failing file is
    gone, prepare + freeze + cancel succeed and the data was never touched."""
    luo = kernel.liveupdate()
    luo.unregister_handler("memfd")
    handler = FailingMemfdHandler(kernel)
    handler.fail_at = fail_at
    luo.register_handler(handler)
    session = luo.create_session("s")
    memfd = new_memfd(kernel, b"intact")
    luo.preserve(session, 1, memfd)
    luo.preserve(session, 2, new_memfd(kernel, b"the failing one"))
    preserved = kernel.kho_out.preserved.frame_count()
    kernel.prepare() if fail_at == "freeze" else None
    with pytest.raises(KernelError, match=f"refusing to {fail_at}"):
        kernel.freeze() if fail_at == "freeze" else kernel.prepare()
    assert kernel.state == "normal"
    assert not kernel.kho_out.finalized
    assert kernel.kho_out.preserved.frame_count() == preserved, "every record was dropped"
    assert session.files[0].data is None
    luo.unpreserve(session, 2)
    kernel.prepare()
    kernel.freeze()
    kernel.cancel()
    assert memfd.read(0, 6) == b"intact"
    memfd.write(0, b"usable")  # and writable


def test_prepare_cancel_cycles_keep_tokens(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("cycle")
    luo.preserve(session, 9, new_memfd(kernel, b"cycle"))
    for _ in range(3):
        kernel.prepare()
        kernel.freeze()
        kernel.cancel()
    assert session.by_token(9).data is None
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    memfd = luo.retrieve_file(luo.retrieve_session("cycle"), 9)
    assert memfd.read(0, 5) == b"cycle"  # type: ignore[attr-defined]


def test_multi_file_and_unreclaimed_global_finish(kernel: Kernel) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("files")
    for token in range(5):
        luo.preserve(session, token, new_memfd(kernel, bytes([65 + token]) * 100))
    nxt = opened(update(kernel))
    luo = nxt.liveupdate()
    s = luo.retrieve_session("files")
    assert luo.retrieve_file(s, 3).read(0, 100) == b"D" * 100  # type: ignore[attr-defined]
    nxt.finish()  # the four never retrieved are discarded
    assert nxt.state == "normal"
    assert not nxt.kho_in.unrestored() - _own(nxt)  # type: ignore[union-attr]


def _own(kernel: Kernel):  # type: ignore[no-untyped-def]
    """Frames the next kernel keeps restored-or-not for itself: none besides its root."""
    from luod.kernel_model.extents import Extents

    assert kernel.kho_in is not None
    root = kernel.kho_in.root_phys >> 12
    return Extents.of(root, root + 1)
