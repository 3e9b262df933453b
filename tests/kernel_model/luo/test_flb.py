"""Scenario 32: an FLB is preserved once for many files and finished after the last."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from luod.kernel_model import catalog
from luod.kernel_model.errors import KernelError
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.luo.file import FileHandler, IncomingFile, OutgoingFile
from luod.kernel_model.luo.flb import Flb
from luod.kernel_model.vfs import File

from .conftest import opened

LOG: list[str] = []


class Widget(File):
    file_type = "widget"


class SampleFlb(Flb):
    compatible = "test-flb-v1"

    def preserve(self) -> tuple[int, Any]:
        LOG.append("flb.preserve")
        return 0xF1B, object()

    def unpreserve(self, data: int, obj: Any) -> None:
        LOG.append("flb.unpreserve")

    def retrieve(self, data: int) -> Any:
        LOG.append(f"flb.retrieve {data:#x}")
        return "flb-object"

    def finish(self, data: int, obj: Any) -> None:
        LOG.append(f"flb.finish {obj}")


class WidgetHandler(FileHandler):
    file_type = "widget"
    formats = ("memfd-v2",)  # borrows a catalogued name: tests only

    def can_preserve(self, file: File) -> bool:
        return isinstance(file, Widget)

    def preserve(self, f: OutgoingFile) -> None:
        LOG.append(f"preserve {f.token}")

    def unpreserve(self, f: OutgoingFile) -> None:
        LOG.append(f"unpreserve {f.token}")

    def retrieve(self, f: IncomingFile) -> File:
        return Widget()

    def finish(self, f: IncomingFile) -> None:
        LOG.append(f"finish {f.token}")


@pytest.fixture
def widget_kernel(kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    """A kernel whose image reads and writes the test FLB's format, as a real FLB's would."""
    LOG.clear()
    monkeypatch.setitem(catalog.FORMAT_LAYERS, SampleFlb.compatible, "flb:test")
    image = kernel.image
    name, current = image.profiles[0]
    kernel.image = attrs.evolve(
        image,
        reads=image.reads | {SampleFlb.compatible},
        profiles=((name, (*current, SampleFlb.compatible)), *image.profiles[1:]),
    )
    luo = kernel.liveupdate()
    luo.image = kernel.image
    luo.unregister_handler("memfd")
    luo.register_handler(WidgetHandler(kernel))
    luo.register_flb("widget", SampleFlb(kernel))
    return kernel


def test_flb_refcount_across_sessions(widget_kernel: Kernel) -> None:
    kernel = widget_kernel
    luo = kernel.liveupdate()
    s1, s2 = luo.create_session("one"), luo.create_session("two")
    luo.preserve(s1, 1, Widget())
    luo.preserve(s2, 2, Widget())
    assert LOG.count("flb.preserve") == 1
    assert luo.outgoing_flbs() == {"test-flb-v1": 2}
    luo.close_session(s1)
    assert luo.outgoing_flbs() == {"test-flb-v1": 1} and "flb.unpreserve" not in LOG
    luo.close_session(s2)
    assert luo.outgoing_flbs() == {} and LOG.count("flb.unpreserve") == 1


def test_flb_across_kexec(widget_kernel: Kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    from luod.kernel_model import filetypes

    kernel = widget_kernel
    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("one"), 1, Widget())
    luo.preserve(luo.create_session("two"), 2, Widget())
    LOG.clear()

    def with_widgets(k: Any) -> list[FileHandler]:
        return [WidgetHandler(k)]  # reads memfd-v2, so the next kernel builds it in

    monkeypatch.setattr(filetypes, "default_handlers", with_widgets)
    monkeypatch.setattr("luod.kernel_model.kernel.default_handlers", with_widgets)
    monkeypatch.setattr("luod.kernel_model.kernel.default_flbs", lambda k: [])
    kernel.prepare()
    kernel.freeze()
    nxt = kernel.kexec()
    nluo = nxt.liveupdate()
    nluo.register_flb("widget", SampleFlb(nxt))  # before the first open, as Linux requires
    opened(nxt)
    assert nluo.flb_get_incoming("test-flb-v1") == "flb-object"
    assert nluo.flb_get_incoming("test-flb-v1") == "flb-object"
    assert LOG == ["flb.retrieve 0xf1b"]  # retrieved once, on demand
    one = nluo.retrieve_session("one")
    nluo.finish_session(one)
    assert "flb.finish flb-object" not in LOG
    nluo.finish_session(nluo.retrieve_session("two"))
    assert LOG[-1] == "flb.finish flb-object"
    with pytest.raises(KernelError) as info:
        nluo.flb_get_incoming("test-flb-v1")
    assert info.value.errno_name == "ENODATA"
    with pytest.raises(KernelError) as info:
        nluo.flb_get_incoming("no-such-flb")
    assert info.value.errno_name == "ENOENT"


def test_registration_rules(kernel: Kernel) -> None:
    luo = kernel.liveupdate()

    class Incomplete(FileHandler):
        file_type = "incomplete"

    with pytest.raises(KernelError) as info:
        luo.register_handler(Incomplete(kernel))
    assert info.value.errno_name == "EINVAL"
    luo.unregister_handler("memfd")
    luo.register_handler(WidgetHandler(kernel))
    with pytest.raises(KernelError) as info:
        luo.register_handler(WidgetHandler(kernel))
    assert info.value.errno_name == "EEXIST"
    luo.register_flb("widget", SampleFlb(kernel))
    with pytest.raises(KernelError) as info:
        luo.register_flb("widget", SampleFlb(kernel))
    assert info.value.errno_name == "EEXIST"
    luo.create_session("busy")
    with pytest.raises(KernelError) as info:
        luo.unregister_handler("widget")
    assert info.value.errno_name == "EBUSY"
