"""The bridge between real file descriptors and emulated memfds: bytes cross by copy.

Clients never hold the backing of an emulated memfd (DESIGN.md): a real fd's bytes are
copied into a new emulated memfd (`check_source`, `source_seals`, `fill`), and a retrieved
emulated memfd is copied out into a new real memfd (`to_real_memfd`). Both directions copy
only the bytes that exist, so a sparse terabyte costs what was written: holes of the
source stay holes, and only frames that hold data in emulated RAM are read back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

from luod.daemon.errors import DaemonError
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.seals import Seal

_T = TypeVar("_T")

COPY_CHUNK = 8 << 20
SEAL_BITS = {
    "seal": fcntl.F_SEAL_SEAL,
    "shrink": fcntl.F_SEAL_SHRINK,
    "grow": fcntl.F_SEAL_GROW,
    "write": fcntl.F_SEAL_WRITE,
    "future_write": getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x10),
    "exec": getattr(fcntl, "F_SEAL_EXEC", 0x20),
}


def is_memfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:
        return False


_UNREADABLE = {
    errno.EBADF: "it is not open for reading (write-only, or O_PATH)",
    errno.EISDIR: "it is a directory",
    errno.ESPIPE: "it is not seekable (a pipe or a socket)",
}


@contextlib.contextmanager
def reading_source(obj: str) -> Iterator[None]:
    """The one mapping of an OSError from using a client's fd (fstat, lseek, pread,
    F_GET_SEALS) to `luod.BadSource`, naming `obj` (session/token, or object) and the
    cause, with the OSError's errno. Emulated memory never raises OSError (its failures
    are KernelErrors), so whatever OSError comes out of the copy is the source's."""
    try:
        yield
    except OSError as exc:
        code = exc.errno or errno.EIO
        cause = _UNREADABLE.get(code, "reading it failed")
        raise DaemonError(
            "BadSource",
            f"cannot read the fd sent for {obj}: {cause} ({os.strerror(code)})",
            errno=code,
            obj=obj,
        ) from exc


def check_source(source: int, obj: str) -> None:
    """A memfd's bytes come from a regular file or a memfd, nothing else."""
    with reading_source(obj):
        mode = os.fstat(source).st_mode
    if not stat.S_ISREG(mode):
        raise DaemonError(
            "BadSource",
            f"the fd sent for {obj} is a {_kind(mode)}: the memfd source must be a regular "
            "file or a memfd",
            errno=errno.EINVAL,
            obj=obj,
        )


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "directory", stat.S_IFIFO: "pipe", stat.S_IFSOCK: "socket"}
    kinds |= {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device"}
    return kinds.get(stat.S_IFMT(mode), "special file")


def source_seals(source: int) -> Seal:
    """The content seals of a source memfd, which travel with the copy (none for a file).
    SEAL itself does not: Linux reports it for every memfd made without
    MFD_ALLOW_SEALING; ask for it explicitly."""
    if not is_memfd(source):
        return Seal(0)
    return Seal(fcntl.fcntl(source, fcntl.F_GET_SEALS)) & ~Seal.SEAL


def copy_steps(
    memfd: MemfdFile, source: int, length: int | None, chunk: int = COPY_CHUNK
) -> Iterator[tuple[int, int]]:
    """Copy a real fd's data extents (holes stay holes) into an emulated memfd, which
    ends up `length` bytes long (default: the source's size), yielding (bytes done, bytes
    in all) after each chunk. The memfd is sized before the first write, in one step: a
    hugetlb memfd only takes whole huge pages."""
    size = os.fstat(source).st_size
    end = size if length is None else min(size, length)
    final = size if length is None else length
    if memfd.size < final:
        memfd.truncate(final)
    offset = 0
    while offset < end:
        try:
            lo = os.lseek(source, offset, os.SEEK_DATA)
            hi = min(os.lseek(source, lo, os.SEEK_HOLE), end)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            lo, hi = offset, end
        if lo >= end:
            break
        for at in range(lo, hi, chunk):
            data = os.pread(source, min(chunk, hi - at), at)
            if data.strip(b"\0"):
                memfd.write(at, data)
            yield at + len(data), end
        offset = hi


def copy_fd_into(
    memfd: MemfdFile, source: int, length: int | None, chunk: int = COPY_CHUNK
) -> None:
    """`copy_steps` in one go."""
    for _ in copy_steps(memfd, source, length, chunk):
        pass


def fill_steps(
    memfd: MemfdFile, source: int, size: int | None, seals: Seal
) -> Iterator[tuple[int, int]]:
    """Make `memfd` a copy of `source` (truncated or extended to `size` if given), sealed
    with `seals`, yielding progress as `copy_steps` does."""
    yield from copy_steps(memfd, source, size)
    if size is not None:
        memfd.truncate(size)
    if seals:
        memfd.add_seals(seals)


def new_copy(kernel: Kernel, source: int, name: str) -> MemfdFile:
    """A new emulated memfd (not preserved) holding the bytes and content seals of the real
    fd `source`."""
    memfd = kernel.new_memfd(name)
    try:
        for _ in fill_steps(memfd, source, None, source_seals(source)):
            pass
    except BaseException:
        memfd.release()
        raise
    return memfd


def copy_out(file: MemfdFile, fd: int) -> None:
    """Copy only the bytes that exist (`MemfdFile.data_ranges`): a hole, a folio never
    written or a page a kexec lost reads zero in the new memfd anyway."""
    for offset, length in file.data_ranges():
        end = offset + length
        for at in range(offset, end, COPY_CHUNK):
            os.pwrite(fd, file.read(at, min(COPY_CHUNK, end - at)), at)


def to_real_memfd(file: MemfdFile, name: str) -> int:
    """A new real memfd (returned open) holding a copy of `file`, sealed like it and
    positioned at its pos."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, file.size)
        copy_out(file, fd)
        bits = 0
        for seal in file.seals.names():
            bits |= SEAL_BITS[seal]
        if bits:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, bits)
        os.lseek(fd, file.pos, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def run_steps(steps: Generator[Any, None, _T]) -> _T:
    """Run a step generator (`Host.memfd_from_fd`) to its end, in one go; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result
