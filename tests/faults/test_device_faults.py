"""Every handler fault point against every preservable file type, in the kernel model.

Generated from the registry's handler points crossed with the file types of the device
workload (`tests/kernel_model/luo/workload.py`: memfds, a hugetlb memfd, an iommufd mapping
guest RAM, a vfio-pci device doing DMA through it, a KVM VM and its guest_memfd). The fault
is armed with the file type as `match`, so it fires in that type's handler, with files of
other types (its dependencies, its dependents) on either side of it:

- preserve, unpreserve: that request fails, nothing else changes, a retry works;
- prepare, freeze: the update is cancelled; every object is usable and unpreserves to
  nothing (not a page of a record left preserved); DMA goes on without a fault;
- cancel, unfreeze: the rollback still undoes everything, the complaint is recorded;
- retrieve: that file (and whatever needs it) fails, sticky; everything else comes back
  byte for byte; finish still works and the failure is listed as damage;
- can_finish: a veto that changes nothing; the next finish works;
- finish: the session finishes; the failure is listed as damage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model import faults
from luod.kernel_model.errors import KernelError
from luod.kernel_model.faults import FaultInjector, InjectedFault
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.luo.state import LuoState
from luod.kernel_model.memfd.file import MemfdFile
from tests.kernel_model.luo.workload import BDF, CONFIG, DMA_WINDOW, SESSION, Workload, new_machine

HANDLER_POINTS = [p.name for p in faults.POINTS if p.layer == "handler"]
TYPE_TOKENS = {
    "memfd": 1,  # the first memfd hit; guest RAM (token 2) is a memfd too
    "iommufd": 3,
    "vfio-pci": 4,
    "memfd-hugetlb": 5,
    "kvm-vm": 6,
    "guest_memfd": 7,
}
NEEDS = {3: {2}, 4: {3}, 7: {6}}  # token -> tokens it retrieves first (dependencies)
# Rollback, unpreserve and finish go newest first: their first memfd is guest RAM.
NEWEST_FIRST = ("handler.unpreserve", "handler.cancel", "handler.unfreeze", "handler.finish")


def first_token(point: str, file_type: str) -> int:
    return 2 if file_type == "memfd" and point in NEWEST_FIRST else TYPE_TOKENS[file_type]


def needs(token: int) -> set[int]:
    out: set[int] = set()
    for dep in NEEDS.get(token, set()):
        out |= {dep} | needs(dep)
    return out


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = new_machine()
    yield m
    m.close()


def preserved(machine: Machine, injector: FaultInjector) -> tuple[Kernel, Workload]:
    kernel = Kernel.cold_boot(machine, resolve("7.3.0"), CONFIG, faults=injector)
    work = Workload(devices=True)
    work.build(kernel, seed=5)
    work.preserve(kernel)
    return kernel, work


def preserve_rest(kernel: Kernel, work: Workload, tokens: list[int]) -> None:
    luo = kernel.liveupdate()
    session = luo.outgoing.get(SESSION) or luo.create_session(SESSION)
    for token in tokens:
        luo.preserve(session, token, work.files[token])
    sparse = work.files[1]
    assert isinstance(sparse, MemfdFile)
    work.pos = sparse.seek(12345)
    kernel.machine.pci[BDF].dma.start(*DMA_WINDOW, seed=3, rate_hz=1_000_000)
    kernel.machine.advance(1_000_000)


def fired(injector: FaultInjector, point: str, file_type: str) -> None:
    token = first_token(point, file_type)
    assert [f.subject for f in injector.fired if f.point == point] == [
        f"{file_type} {SESSION}/{token:#x}"
    ]


@pytest.mark.parametrize("file_type", sorted(TYPE_TOKENS))
@pytest.mark.parametrize("point", HANDLER_POINTS)
def test_handler_fault(machine: Machine, point: str, file_type: str) -> None:
    injector = FaultInjector()
    token = first_token(point, file_type)
    if point == "handler.preserve":
        kernel = Kernel.cold_boot(machine, resolve("7.3.0"), CONFIG, faults=injector)
        work = Workload(devices=True)
        work.build(kernel, seed=5)
        injector.arm(point, match=file_type)
        luo = kernel.liveupdate()
        session = luo.create_session(SESSION)
        for t in range(1, token):
            luo.preserve(session, t, work.files[t])
        with pytest.raises(InjectedFault, match=re.escape(f"injected fault at {point}")):
            luo.preserve(session, token, work.files[token])
        assert [f.token for f in session.files] == list(range(1, token))
        preserve_rest(kernel, work, list(range(token, 8)))  # the retry works
        update_and_check(kernel, work)
        fired(injector, point, file_type)
        return

    kernel, work = preserved(machine, injector)
    luo = kernel.liveupdate()
    injector.arm(point, match=file_type)
    if point == "handler.unpreserve":
        with pytest.raises(InjectedFault):
            luo.close_session(luo.outgoing[SESSION])
        # newest first: every newer file went, this one and the older ones stayed
        assert [f.token for f in luo.outgoing[SESSION].files] == list(range(1, token + 1))
        preserve_rest(kernel, work, list(range(token + 1, 8)))
        update_and_check(kernel, work)
    elif point in ("handler.prepare", "handler.freeze"):
        with pytest.raises(InjectedFault, match=re.escape(f"injected fault at {point}")):
            kernel.prepare()
            kernel.freeze()
        assert kernel.state == LuoState.NORMAL.value
        work.check_usable(kernel)
    elif point in ("handler.cancel", "handler.unfreeze"):
        kernel.prepare()
        kernel.freeze()
        kernel.cancel()
        assert kernel.state == LuoState.NORMAL.value
        (complaint,) = luo.rollback_errors
        assert isinstance(complaint, InjectedFault) and complaint.point == point
        work.check_usable(kernel)
    elif point == "handler.retrieve":
        retrieve_with_one_failure(kernel, work, token)
    elif point == "handler.can_finish":
        nxt = kexec(kernel)
        with pytest.raises(InjectedFault, match=re.escape(f"injected fault at {point}")):
            work.check_after(nxt, nxt.liveupdate().formats.get("memfd") or "memfd-v3")
        nluo = nxt.liveupdate()
        assert SESSION in nluo.incoming and nxt.state == LuoState.UPDATED.value
        nluo.finish_session(nluo.incoming[SESSION])  # the veto is spent
        assert nxt.state == LuoState.NORMAL.value and nluo.damage == []
    elif point == "handler.finish":
        nxt = kexec(kernel)
        work.check_after(nxt, "memfd-v3")
        nluo = nxt.liveupdate()
        assert nxt.state == LuoState.NORMAL.value
        assert [(d.session, d.token, d.step) for d in nluo.damage] == [(SESSION, token, "finish")]
    else:  # pragma: no cover - a new handler point needs its case here
        raise AssertionError(f"no case for {point}")
    fired(injector, point, file_type)


def kexec(kernel: Kernel) -> Kernel:
    kernel.prepare()
    kernel.freeze()
    nxt = kernel.kexec()
    nxt.liveupdate().open_device()
    return nxt


def update_and_check(kernel: Kernel, work: Workload) -> None:
    nxt = kexec(kernel)
    work.check_after(nxt, "memfd-v3")
    assert nxt.state == LuoState.NORMAL.value and nxt.liveupdate().damage == []


def retrieve_with_one_failure(kernel: Kernel, work: Workload, token: int) -> None:
    nxt = kexec(kernel)
    luo = nxt.liveupdate()
    session = luo.retrieve_session(SESSION)
    failing = {token} | {t for t in work.files if token in needs(t)}
    for t in sorted(work.files):
        for _ in range(2):  # sticky: the same failure the second time
            if t in failing:
                with pytest.raises(
                    KernelError, match=re.escape("injected fault at handler.retrieve")
                ):
                    luo.retrieve_file(session, t)
            else:
                file = luo.retrieve_file(session, t)
                if isinstance(file, MemfdFile):
                    for offset, data in work.data[t]:
                        assert file.read(offset, len(data)) == data, (t, offset)
    if 3 not in failing:  # a retrieved iommufd must be reclaimed before finish
        luo.reclaim(session, 3)
    luo.finish_session(session)
    assert nxt.state == LuoState.NORMAL.value
    damaged = {(d.token, d.step) for d in luo.damage}
    assert (token, "retrieve") in damaged
    assert {t for t, step in damaged if step == "retrieve"} == failing
