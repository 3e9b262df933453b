"""One object of every preservable type, for the format tests: build it on a kernel,
preserve it in dependency order, and check every byte of it after a kexec (or that it is
all still usable when the update was refused).

Tokens in session "w": 1 a sparse memfd with random data, sealed GROW|SHRINK, its pos moved
after preserve; with devices also 2 a memfd of guest RAM, 3 an iommufd mapping it, 4 a
vfio-pci device bound to that iommufd and doing DMA, 5 a hugetlb memfd, 6 a KVM VM and
7 its guest_memfd.
"""

from __future__ import annotations

import random

import attrs

from luod.hw.machine import Machine
from luod.kernel_model.iommufd.file import IommufdFile
from luod.kernel_model.kernel import BootConfig, Kernel
from luod.kernel_model.kvm.file import GuestMemfdFile, KvmVmFile
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.hugetlb import HugetlbMemfdFile
from luod.kernel_model.memfd.seals import Seal
from luod.kernel_model.vfio_pci.file import VfioDeviceFile
from luod.kernel_model.vfs import File

BDF = "0000:01:00.0"
CONFIG = BootConfig(hugetlb=((2 << 20, 8),))
SESSION = "w"
SPARSE_SIZE = 64 << 20
RAM_SIZE = 4 << 20
DMA_WINDOW = (2 << 20, 1 << 20)  # inside guest RAM
SEALS = Seal.GROW | Seal.SHRINK
FORMATS_WITH_SEALS = ("memfd-v2", "memfd-v3")


def new_machine() -> Machine:
    return Machine.create(4 << 30, pci_devices=[BDF])


@attrs.define
class Workload:
    devices: bool
    # token -> (file offset, bytes) written there; everything else of the file reads zero
    data: dict[int, list[tuple[int, bytes]]] = attrs.field(factory=dict)
    files: dict[int, File] = attrs.field(factory=dict)
    pos: int = 0

    def build(self, kernel: Kernel, seed: int) -> None:
        rng = random.Random(seed)
        sparse = kernel.new_memfd("sparse")
        sparse.truncate(SPARSE_SIZE)
        chunks = [
            (0, rng.randbytes(5000)),
            (17 << 20, rng.randbytes(4096)),
            (SPARSE_SIZE - 3, b"end"),
        ]
        for offset, data in chunks:
            sparse.write(offset, data)
        sparse.add_seals(SEALS)
        self.add(kernel, 1, sparse, chunks)
        if not self.devices:
            return
        ram = kernel.new_memfd("ram")
        ram.truncate(RAM_SIZE)
        pattern = [(0, rng.randbytes(8192)), (RAM_SIZE - 4096, rng.randbytes(4096))]
        for offset, data in pattern:
            ram.write(offset, data)
        iommufd = IommufdFile(kernel.machine, kernel.mm)
        iommufd.map_file(ram, iova=0)
        device = VfioDeviceFile(kernel.machine, BDF)
        device.bind(iommufd)
        huge = kernel.new_memfd("huge", page_size=2 << 20)
        assert isinstance(huge, HugetlbMemfdFile)
        huge.truncate(4 << 20)
        huge_data = [(3 << 20, rng.randbytes(1000))]
        huge.write(*huge_data[0])
        vm = KvmVmFile(vm_type=2)
        gmem = GuestMemfdFile(kernel.memory, kernel.mm, vm, flags=1)
        gmem.truncate(1 << 20)
        gmem_data = [(8192, rng.randbytes(3000))]
        gmem.write(*gmem_data[0])
        # the DMA pattern lands in DMA_WINDOW: not compared byte for byte, but verified
        self.add(kernel, 2, ram, pattern)
        for token, file in ((3, iommufd), (4, device)):
            self.add(kernel, token, file, [])
        self.add(kernel, 5, huge, huge_data)
        self.add(kernel, 6, vm, [])
        self.add(kernel, 7, gmem, gmem_data)

    def add(self, kernel: Kernel, token: int, file: File, data: list[tuple[int, bytes]]) -> None:
        kernel.install(file)
        self.files[token] = file
        self.data[token] = data

    def preserve(self, kernel: Kernel) -> None:
        luo = kernel.liveupdate()
        session = luo.create_session(SESSION)
        for token in sorted(self.files):
            luo.preserve(session, token, self.files[token])
        sparse = self.files[1]
        assert isinstance(sparse, MemfdFile)
        self.pos = sparse.seek(12345)  # after preserve: captured at freeze
        if self.devices:
            kernel.machine.pci[BDF].dma.start(*DMA_WINDOW, seed=3, rate_hz=1_000_000)
            kernel.machine.advance(1_000_000)

    def check_usable(self, kernel: Kernel) -> None:
        """After a refused update: every object works and can be unpreserved."""
        sparse = self.files[1]
        assert isinstance(sparse, MemfdFile)
        sparse.write(100, b"still writable")  # inside the size: allowed while preserved
        assert sparse.read(100, 14) == b"still writable"
        if self.devices:
            kernel.machine.advance(1_000_000)
            assert kernel.machine.pci[BDF].dma.faults == 0
        luo = kernel.liveupdate()
        luo.close_session(luo.outgoing[SESSION])
        assert kernel.kho_out.preserved.frame_count() == 1  # the KHO root page alone
        sparse.fallocate(0, 4096, punch_hole=True)  # the mapping is no longer frozen

    def check_after(self, kernel: Kernel, memfd_format: str) -> None:
        """After a kexec: every object retrieved with its bytes; then finished."""
        luo = kernel.liveupdate()
        session = luo.retrieve_session(SESSION)
        assert sorted(f.token for f in session.files) == sorted(self.files)
        for token, chunks in self.data.items():
            file = luo.retrieve_file(session, token)
            old = self.files[token]
            assert type(file) is type(old)
            if isinstance(file, MemfdFile):
                assert isinstance(old, MemfdFile)
                assert file.size == old.size
                for offset, data in chunks:
                    assert file.read(offset, len(data)) == data, (token, offset)
                if token != 2:  # guest RAM also holds the device's DMA writes
                    assert file.read(0, file.size) == _expected(file.size, chunks), token
        sparse = luo.retrieve_file(session, 1)
        assert isinstance(sparse, MemfdFile)
        assert sparse.pos == self.pos
        assert sparse.seals == (SEALS if memfd_format in FORMATS_WITH_SEALS else Seal(0))
        if self.devices:
            device = kernel.machine.pci[BDF]
            kernel.machine.advance(1_000_000)
            assert device.dma.faults == 0 and device.dma.verify().ok
            gmem = luo.retrieve_file(session, 7)
            assert isinstance(gmem, GuestMemfdFile) and gmem.vm is luo.retrieve_file(session, 6)
            luo.reclaim(session, 3)
        luo.finish_session(session)


def _expected(size: int, chunks: list[tuple[int, bytes]]) -> bytes:
    """The whole file as written: the chunks, zeros everywhere else."""
    out = bytearray(size)
    for offset, data in chunks:
        out[offset : offset + len(data)] = data
    return bytes(out)
