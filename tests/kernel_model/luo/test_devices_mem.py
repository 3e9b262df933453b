"""hugetlb memfds with their FLB, KVM VMs and guest_memfd: order, retrieval, pools."""

from __future__ import annotations

import pytest

from luod.hw.machine import Machine
from luod.kernel_model.errors import BadPageSize, KernelError
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.kvm.file import GuestMemfdFile, KvmVmFile
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.hugetlb import HugetlbMemfdFile

from .conftest import opened

POOLS = ((2 << 20, 64), (1 << 30, 2))


@pytest.fixture
def devkernel(machine: Machine) -> Kernel:
    return Kernel.cold_boot(machine, resolve("7.1.0"), BootConfig(hugetlb=POOLS))


def update(kernel: Kernel) -> Kernel:
    kernel.prepare()
    kernel.freeze()
    return opened(kernel.kexec())


@pytest.mark.parametrize(("page_size", "order"), [(2 << 20, 9), (1 << 30, 18)])
def test_memfd_page_size_picks_the_hugetlb_pool(
    devkernel: Kernel, page_size: int, order: int
) -> None:
    pool = devkernel.hugetlb.pool(order)
    memfd = devkernel.new_memfd("huge", page_size=page_size)
    assert isinstance(memfd, HugetlbMemfdFile)
    assert (memfd.folio_order, memfd.folio_size) == (order, page_size)
    free = pool.free
    memfd.write(0, b"x")
    assert pool.free == free - 1, "a hugetlb memfd's folios come from its pool"


def test_memfd_page_size_4k_is_shmem_and_others_are_refused(devkernel: Kernel) -> None:
    shmem = devkernel.new_memfd("small", page_size=4096, folio_order=9)
    assert type(shmem) is MemfdFile and shmem.folio_order == 9
    assert type(devkernel.new_memfd("default")) is MemfdFile
    for page_size in (0, 8192, 4 << 20):
        with pytest.raises(BadPageSize) as info:
            devkernel.memfd_create("odd", page_size=page_size)
        assert info.value.errno_name == "EINVAL" and info.value.obj == "odd"
        assert f"page size {page_size} is not 4K, 2M or 1G" in info.value.message
    with pytest.raises(KernelError) as mixed:
        devkernel.new_memfd("mixed", page_size=2 << 20, folio_order=9)
    assert mixed.value.errno_name == "EINVAL"
    assert len(devkernel.files) == 0, "a refused memfd_create installs nothing"


def test_hugetlb_memfd_survives_and_pools_come_back(devkernel: Kernel) -> None:
    kernel = devkernel
    pool2m = kernel.hugetlb.pool(9)
    assert (pool2m.total, pool2m.free) == (64, 64)
    memfd = kernel.file(kernel.memfd_create("ram", page_size=2 << 20))
    assert isinstance(memfd, HugetlbMemfdFile)
    memfd.truncate(8 << 20)
    memfd.write(3 << 20, b"in a huge page")
    assert pool2m.free == 63  # only the written page is populated so far
    luo = kernel.liveupdate()
    luo.preserve(luo.create_session("vm"), 1, memfd)
    assert pool2m.free == 63, "preserve pins what is populated and leaves holes alone"
    assert luo.outgoing_flbs() == {"hugetlb-v1": 1}
    kernel.prepare()
    assert pool2m.free == 60, "the dense hugetlb-memfd-v1 record has holes filled at prepare"
    kernel.cancel()
    assert pool2m.free == 60  # filled holes stay in the memfd (unpreserved again)
    nxt = update(kernel)
    luo = nxt.liveupdate()
    got = luo.retrieve_file(luo.retrieve_session("vm"), 1)
    assert isinstance(got, HugetlbMemfdFile)
    assert got.read(3 << 20, 14) == b"in a huge page"
    pool = nxt.hugetlb.pool(9)
    assert pool.total == 64 + 4  # a fresh pool of 64, plus the 4 pages in use adopted
    assert luo.incoming["vm"].files[0].compatible == "hugetlb-memfd-v1"
    nxt.finish()
    assert pool.total == 64, "the FLB's finish trims the surplus back to the old size"
    assert pool.free == 64  # nobody held the retrieved memfd: finish released its pages
    assert nxt.hugetlb.pool(18).total == 2


def test_hugetlb_pool_exhaustion_is_enomem(devkernel: Kernel) -> None:
    memfd = devkernel.file(devkernel.memfd_create("big", page_size=1 << 30))
    assert isinstance(memfd, HugetlbMemfdFile)
    memfd.truncate(3 << 30)
    with pytest.raises(KernelError) as info:
        memfd.fill_holes()
    assert info.value.errno_name == "ENOMEM"
    assert "free" in info.value.message


def test_vm_before_guest_memfd(devkernel: Kernel) -> None:
    kernel = devkernel
    luo = kernel.liveupdate()
    vm = KvmVmFile(vm_type=2)
    gmem = GuestMemfdFile(kernel.memory, kernel.mm, vm, flags=1)
    kernel.install(vm)  # the process holds fds for both
    kernel.install(gmem)
    gmem.truncate(1 << 20)
    gmem.write(4096, b"private guest page")
    session = luo.create_session("vm")
    with pytest.raises(KernelError) as info:
        luo.preserve(session, 2, gmem)  # the VM is not preserved yet
    assert info.value.errno_name == "ENOENT"
    assert "kvm-vm" in info.value.message
    other = luo.create_session("elsewhere")
    luo.preserve(other, 1, vm)
    with pytest.raises(KernelError) as info:
        luo.preserve(session, 2, gmem)  # 31: the dependency is in another session
    assert info.value.errno_name == "ENOENT"
    luo.close_session(other)
    luo.preserve(session, 1, vm)
    luo.preserve(session, 2, gmem)
    nxt = update(kernel)
    luo = nxt.liveupdate()
    s = luo.retrieve_session("vm")
    got = luo.retrieve_file(s, 2)  # retrieving guest_memfd pulls its VM in
    assert isinstance(got, GuestMemfdFile)
    vm_again = luo.retrieve_file(s, 1)
    assert isinstance(vm_again, KvmVmFile)
    assert got.vm is vm_again
    assert got.vm.vm_type == 2 and got.flags == 1
    assert got.read(4096, 18) == b"private guest page"
    luo.finish_session(s)
