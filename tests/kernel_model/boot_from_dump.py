"""Boot a kernel from a machine dump in a fresh process and report what it finds.

Run as `python -m tests.kernel_model.boot_from_dump DIR RELEASE PFN:ORDER ...`: loads the
machine from files only, boots the next kernel (bundled release RELEASE), restores each
folio and prints one JSON object with the boot report and the sha256 of every restored
folio. Nothing of the kernel that wrote the dump exists in this process.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from luod.hw.machine import Machine
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import Kernel


def main(argv: list[str]) -> int:
    machine = Machine.load(Path(argv[0]))
    kernel = Kernel.boot(machine, resolve(argv[1]))
    digests = {}
    for spec in argv[2:]:
        pfn, order = (int(x, 0) for x in spec.split(":"))
        assert kernel.kho_in is not None
        kernel.kho_in.restore_folio(pfn, order)
        digests[spec] = hashlib.sha256(machine.memory.read(pfn, 1 << order)).hexdigest()
    report = {"kind": kernel.boot_report.kind, "reason": kernel.boot_report.reason}
    print(json.dumps({"boot": report, "digests": digests}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
