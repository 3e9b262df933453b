"""Programs' real memfds, preserved live (DESIGN.md "luod-run").

PRESERVE_FD gets the caller's real memfd. luod copies its bytes into an emulated memfd,
which is what the model preserves, and keeps the real fd: the program may go on writing
through its mapping (and close its own fd), so the bytes are copied again right before the
freeze (`sync`, which also fills the memfd's holes as the kernel's pinning does, so that
the records hold every frame) and once more when userspace ends at the kexec (`release`):
what arrives is what the program wrote last. While the file
is preserved, `frozen` tells the interposer to refuse ftruncate/fallocate with EPERM, as the
kernel's frozen mapping does. A second PRESERVE_FD of the same file (any fd, by inode)
finds the same emulated memfd, so the model's one-preservation rule (EBUSY) holds.

RETRIEVE_FD hands out a real memfd filled from the emulated one; `handed_out` remembers
which emulated file it stands for until its session finishes, so preserving it again
meets the model's rule (a retrieved file is LUO's until FINISH: EBUSY).

A file the model has no handler for is still handed to the model, as an opaque `File`, so
the refusal (ENOENT) comes from the one place that decides it.
"""

from __future__ import annotations

import contextlib
import os
import stat

from luod.daemon import memfd_bridge
from luod.daemon.host import Host
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.seals import Seal
from luod.kernel_model.vfs import File

COPY_CHUNK = 1 << 20
PAGE = 4096
Inode = tuple[int, int]


def _inode(fd: int) -> Inode:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _shmem_memfd(fd: int) -> bool:
    """A memfd on shmem (not hugetlbfs, whose blocks are huge pages): what memfd-luo takes."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink or st.st_blksize != PAGE:
        return False
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:
        return False


class LiveFiles:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._live: dict[Inode, tuple[MemfdFile, int]] = {}
        self._handed_out: dict[Inode, File] = {}

    def model_file(self, fd: int) -> tuple[File, Inode | None]:
        """The emulated file standing for the real `fd` (which this call does not keep),
        and its inode when it is a memfd."""
        if not _shmem_memfd(fd):
            return File(), None
        key = _inode(fd)
        known = self._live.get(key)
        if known is not None:
            return known[0], key
        if key in self._handed_out:
            return self._handed_out[key], None
        return memfd_bridge.new_copy(self.host.kernel, fd, ""), key

    def preserved(self, key: Inode, file: MemfdFile, fd: int) -> None:
        """`file` (standing for the real `fd`) is preserved now; luod keeps a copy of fd."""
        if key not in self._live:
            self._live[key] = (file, os.dup(fd))

    def handed_out(self, fd: int, file: File) -> None:
        """The real memfd `fd` stands for the retrieved emulated `file`."""
        self._handed_out[_inode(fd)] = file

    def finished(self, files: list[File]) -> None:
        """These retrieved files' session finished: their real memfds are the program's."""
        gone = {id(f) for f in files}
        for key, file in list(self._handed_out.items()):
            if id(file) in gone:
                del self._handed_out[key]

    def frozen(self, key: Inode) -> bool:
        return key in self._live

    def unpreserved(self, files: list[File]) -> None:
        """These files' session went away: forget the real fds behind them."""
        gone = {id(f) for f in files}
        for key, (file, fd) in list(self._live.items()):
            if id(file) in gone:
                del self._live[key]
                os.close(fd)

    def sync(self) -> None:
        """Before the freeze: bring each preserved memfd up to its real file's bytes, and
        give it every folio of its size, as the kernel's pinning at preserve does, so that
        later writes land in frames the records hold."""
        for file, fd in self._live.values():
            if file.refs > 0 and not file.seals & (Seal.WRITE | Seal.FUTURE_WRITE):
                with contextlib.suppress(OSError):
                    _copy_changed(fd, file)
                file.fill_holes()

    def release(self) -> None:
        """Userspace ends: the last bytes written (into frames the records hold), then the
        real files go."""
        for file, fd in self._live.values():
            if file.refs > 0 and not file.seals & (Seal.WRITE | Seal.FUTURE_WRITE):
                with contextlib.suppress(OSError):
                    _copy_changed(fd, file)
            os.close(fd)
        self._live.clear()
        self._handed_out.clear()


def _copy_changed(fd: int, file: MemfdFile) -> None:
    end = min(os.fstat(fd).st_size, file.size)
    for at in range(0, end, COPY_CHUNK):
        n = min(COPY_CHUNK, end - at)
        data = os.pread(fd, n, at)
        if data != file.read(at, len(data)):
            file.write(at, data)
