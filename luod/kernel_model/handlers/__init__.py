"""File handlers: one per preservable file type, each with the record formats it writes
and reads. `default_handlers` is what a booting kernel registers."""

from __future__ import annotations

from luod.kernel_model.handlers.memfd import MemfdHandler
from luod.kernel_model.luo.handler import FileHandler, KernelServices


def default_handlers(kernel: KernelServices) -> list[FileHandler]:
    return [MemfdHandler(kernel)]
