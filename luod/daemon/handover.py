"""The KHO handover as clients see it: the root blob `luoctl kho dump` writes for `dtc`.

Two blobs can exist: the outgoing one, which freeze writes for the next kernel, and the
one the running kernel booted from. Both are flattened device trees, byte for byte what
the kernels read.
"""

from __future__ import annotations

import errno
from typing import Any

from luod.daemon.errors import DaemonError
from luod.kernel_model.kernel import Kernel


def kho_dump(kernel: Kernel, source: str | None) -> dict[str, Any]:
    """The outgoing blob once an update has frozen, or the one this kernel booted from;
    `source` None takes the first of the two there is. luod.NoHandover (ENOENT) if none."""
    found: list[tuple[str, str, bytes | None]] = []
    if source in (None, "outgoing"):
        found.append(("outgoing", kernel.kho_out.compatible, kernel.kho_out.root_blob()))
    if source in (None, "incoming") and kernel.kho_in is not None:
        found.append(("incoming", kernel.kho_in.compatible, kernel.kho_in.root_blob))
    for where, compatible, blob in found:
        if blob:
            return {"source": where, "compatible": compatible, "size": len(blob), "blob": blob}
    no_out = f"no outgoing KHO handover: it is written at freeze (state {kernel.state})"
    no_in = "this kernel booted cold: no handover came in"
    message = {"outgoing": no_out, "incoming": no_in}.get(source or "", f"{no_out}; {no_in}")
    raise DaemonError("NoHandover", message, errno=errno.ENOENT, obj="kho")
