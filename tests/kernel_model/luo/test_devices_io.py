"""iommufd and vfio-pci: dependency order, finish veto until reclaim, freeze preconditions,
reclaim verification, and DMA that keeps landing through the kexec (scenarios 25, 27, 30,
32, 39 of reference/kernel.md §9)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.errors import KernelError
from luod.kernel_model.images import resolve
from luod.kernel_model.iommufd.file import IommufdFile, Mapping
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.vfio_pci.file import VfioDeviceFile

from .conftest import opened

BDF = "0000:01:00.0"
RAM = 16 << 20
WINDOW = (12 << 20, 1 << 20)  # DMA ring at IOVA 12 MiB, apart from the pattern


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = Machine.create(4 << 30, pci_devices=[BDF])
    yield m
    m.close()


@pytest.fixture
def kernel(machine: Machine) -> Kernel:
    return Kernel.cold_boot(machine, resolve("7.1.0"), BootConfig())


def build_vm(kernel: Kernel) -> tuple[MemfdFile, IommufdFile, VfioDeviceFile]:
    ram = kernel.new_memfd("ram")
    ram.truncate(RAM)
    ram.write(0, b"guest pattern " * 1000)
    iommufd = IommufdFile(kernel.machine, kernel.mm)
    iommufd.map_file(ram, iova=0)
    device = VfioDeviceFile(kernel.machine, BDF)
    device.bind(iommufd)
    for file in (ram, iommufd, device):
        kernel.install(file)
    return ram, iommufd, device


def preserve_all(kernel: Kernel, files: tuple[MemfdFile, IommufdFile, VfioDeviceFile]) -> None:
    luo = kernel.liveupdate()
    session = luo.create_session("vm1")
    for token, file in enumerate(files, start=1):
        luo.preserve(session, token, file)


def test_dependency_order(kernel: Kernel) -> None:
    ram, iommufd, device = build_vm(kernel)
    luo = kernel.liveupdate()
    session = luo.create_session("vm1")
    with pytest.raises(KernelError) as info:
        luo.preserve(session, 3, device)  # vfio before its iommufd
    assert info.value.errno_name == "ENOENT"
    with pytest.raises(KernelError) as info:
        luo.preserve(session, 2, iommufd)  # iommufd before the memfd it maps
    assert info.value.errno_name == "ENOENT"
    luo.preserve(session, 1, ram)
    luo.preserve(session, 2, iommufd)
    luo.preserve(session, 3, device)
    with pytest.raises(KernelError) as info:
        luo.unpreserve(session, 2)  # the device still needs it
    assert info.value.errno_name == "EBUSY"
    assert luo.outgoing_flbs() == {"iommu-core-v1": 1, "pci-v1": 1}


def test_freeze_refuses_interrupts_on_then_succeeds(kernel: Kernel) -> None:
    files = build_vm(kernel)
    preserve_all(kernel, files)
    files[2].set_irq(True)
    kernel.prepare()
    with pytest.raises(KernelError) as info:
        kernel.freeze()
    assert info.value.errno_name == "EINVAL" and "interrupts" in info.value.message
    assert kernel.state == "normal"  # the failed freeze cancelled the whole update
    files[2].set_irq(False)
    kernel.prepare()
    kernel.freeze()
    assert kernel.state == "frozen"


def kexec_with_dma(kernel: Kernel) -> tuple[Kernel, int]:
    machine = kernel.machine
    device = machine.pci[BDF]
    device.dma.start(WINDOW[0], WINDOW[1], seed=7, rate_hz=1_000_000)
    machine.advance(1_000_000)  # 1 ms of DMA before the update
    kernel.prepare()
    kernel.freeze()
    before = device.dma.writes
    machine.advance(2_000_000)  # the blackout: DMA goes on
    nxt = kernel.kexec()
    machine.advance(2_000_000)
    during = device.dma.writes - before
    return opened(nxt), during


def test_dma_runs_through_the_kexec_and_finish_waits_for_reclaim(kernel: Kernel) -> None:
    files = build_vm(kernel)
    preserve_all(kernel, files)
    nxt, during = kexec_with_dma(kernel)
    device = nxt.machine.pci[BDF]
    assert during > 0 and device.dma.faults == 0
    assert device.dma.verify().ok
    luo = nxt.liveupdate()
    session = luo.retrieve_session("vm1")
    ram = luo.retrieve_file(session, 1)
    assert isinstance(ram, MemfdFile)
    assert ram.read(0, 14) == b"guest pattern "
    iommufd = luo.retrieve_file(session, 2)
    vfio = luo.retrieve_file(session, 3)
    assert isinstance(iommufd, IommufdFile) and isinstance(vfio, VfioDeviceFile)
    with pytest.raises(KernelError) as info:
        vfio.bind(IommufdFile(nxt.machine, nxt.mm))
    assert info.value.errno_name == "EPERM"
    with pytest.raises(KernelError) as info:
        luo.finish_session(session)  # 25: vetoed until reclaimed, nothing changed
    assert info.value.errno_name == "EBUSY"
    assert "vm1" in luo.incoming
    for wrong in (
        [Mapping(0, RAM, nxt.new_memfd("other"), 0)],  # another memfd
        [Mapping(4096, RAM, ram, 0)],  # shifted IOVA
        [Mapping(0, RAM - 4096, ram, 0)],  # shorter
    ):
        if wrong[0].memfd is not ram:
            wrong[0].memfd.truncate(RAM)
        with pytest.raises(KernelError) as info:
            iommufd.reclaim(wrong)
        assert info.value.errno_name == "EINVAL"
        assert not iommufd.reclaimed
    luo.reclaim(session, 2)  # the kernel re-creates the mappings from the record
    assert iommufd.reclaimed
    nxt.machine.advance(1_000_000)
    assert nxt.machine.pci[BDF].dma.faults == 0
    luo.finish_session(session)


def test_unpreserved_page_tables_make_the_device_fault(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUOD_TEST_SKIP_IOMMU_TABLES", "1")
    files = build_vm(kernel)
    preserve_all(kernel, files)
    nxt, _ = kexec_with_dma(kernel)
    assert nxt.machine.pci[BDF].dma.faults > 0
    luo = nxt.liveupdate()
    session = luo.retrieve_session("vm1")
    with pytest.raises(KernelError) as info:
        luo.retrieve_file(session, 2)
    assert info.value.errno_name == "EIO"


def test_closing_the_sessions_unpreserves_everything(kernel: Kernel) -> None:
    """39: a daemon that dies before the kexec closes every session fd."""
    files = build_vm(kernel)
    preserve_all(kernel, files)
    luo = kernel.liveupdate()
    luo.close_session(luo.outgoing["vm1"])
    assert kernel.kho_out.preserved.frame_count() == 1
    assert luo.outgoing_flbs() == {}
    assert files[2].iommufd is files[1]  # the process still holds its objects, usable
