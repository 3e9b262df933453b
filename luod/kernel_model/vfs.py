"""The generic emulated `struct file` and the descriptor table of the emulated process.

A `File` has a kernel-wide identity (`inode`) that live update uses for its "one
preservation per object" rule, a type name, and a reference count held by descriptors and
by LUO (which takes its own reference, so a process may close its descriptor right after
preserving). When the last reference goes, `release()` returns the file's resources.

The `FileTable` is the descriptor table of the single emulated process (luod plays the
userspace agent that holds every session and file). A kexec ends that process: the next
kernel starts with an empty table.
"""

from __future__ import annotations

import errno
import itertools
from typing import ClassVar

from luod.kernel_model.errors import KernelError

_inodes = itertools.count(1)


class BadFileDescriptor(KernelError):
    default_errno = errno.EBADF


class File:
    """Base of every emulated file. Subclasses set `file_type` and implement `release`."""

    file_type: ClassVar[str] = "file"

    def __init__(self) -> None:
        self.inode = next(_inodes)
        self.refs = 0

    def get(self) -> File:
        self.refs += 1
        return self

    def put(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.release()

    def release(self) -> None:
        """Free what the file holds; called once, when the last reference is dropped."""

    def describe(self) -> str:
        return f"{self.file_type} inode {self.inode}"


class FileTable:
    """Descriptor numbers of the emulated process, lowest free number first."""

    def __init__(self) -> None:
        self._files: dict[int, File] = {}

    def install(self, file: File) -> int:
        fd = 0
        while fd in self._files:
            fd += 1
        self._files[fd] = file.get()
        return fd

    def get(self, fd: int) -> File:
        try:
            return self._files[fd]
        except KeyError:
            raise BadFileDescriptor(f"fd {fd} is not open", obj=f"fd {fd}") from None

    def close(self, fd: int) -> None:
        file = self._files.pop(fd, None)
        if file is None:
            raise BadFileDescriptor(f"fd {fd} is not open", obj=f"fd {fd}")
        file.put()

    def __contains__(self, fd: int) -> bool:
        return fd in self._files

    def __len__(self) -> int:
        return len(self._files)
