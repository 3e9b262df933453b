"""The next kernel sees only bytes: a fresh process boots from a dumped machine, and the
handover blob is a real device tree that `dtc` decodes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from luod.hw.memory import PAGE_SIZE
from luod.kernel_model.fdt import decode_fdt
from luod.kernel_model.kernel import Kernel

from .conftest import KHO_V1

ROOT = Path(__file__).resolve().parents[2]


def test_a_fresh_process_finds_the_preserved_data(kernel: Kernel, tmp_path: Path) -> None:
    specs = {}
    for order in (0, 3, 9):
        pfn = kernel.mm.alloc_folio(order)
        data = os.urandom((1 << order) * PAGE_SIZE)
        kernel.machine.memory.write(pfn, data)
        kernel.kho_out.preserve_folio(pfn, order)
        specs[f"{pfn:#x}:{order}"] = hashlib.sha256(data).hexdigest()
    lost = kernel.mm.alloc_folio(0)
    kernel.machine.memory.write(lost, b"not preserved")
    kernel.machine.handover.load(kernel.kho_out.finalize())
    kernel.machine.dump(tmp_path / "machine")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.kernel_model.boot_from_dump",
            str(tmp_path / "machine"),
            KHO_V1.release,
            *specs,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["boot"] == {"kind": "kho", "reason": None}
    assert result["digests"] == specs
    # and the dump really is only bytes: the unpreserved page is in it, unreleased,
    # until a kernel boots from it
    raw = (tmp_path / "machine" / "ram.img").read_bytes()[lost * PAGE_SIZE :][:13]
    assert raw == b"not preserved"


def test_dtc_decodes_the_root_blob(kernel: Kernel, tmp_path: Path) -> None:
    dtc = shutil.which("dtc")
    assert dtc, "dtc is missing: `make test` installs Debian's device-tree-compiler"
    kho = kernel.kho_out
    kho.preserve_folio(kernel.mm.alloc_folio(0))
    kho.add_subtree("LUO", 0x123000, 512)
    root_phys = kho.finalize()
    blob = kernel.machine.memory.read_at(root_phys, PAGE_SIZE)
    size = int.from_bytes(blob[4:8], "big")
    (tmp_path / "kho.dtb").write_bytes(blob[:size])
    dts = subprocess.run(
        [dtc, "-I", "dtb", "-O", "dts", str(tmp_path / "kho.dtb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'compatible = "kho-v1";' in dts
    assert "preserved-memory-map = <0x00 " in dts
    assert "scratch-regions = <" in dts
    assert "LUO {" in dts
    assert "preserved-data = <0x00 0x123000>;" in dts
    assert "blob-size = <0x00 0x200>;" in dts
    tree = decode_fdt(blob[:size])
    assert tree.get_str("compatible") == "kho-v1"


@pytest.mark.parametrize("hops", [1, 2])
def test_dump_between_hops(kernel: Kernel, tmp_path: Path, hops: int) -> None:
    """The machine can be dumped and reloaded mid-series and the chain goes on."""
    from luod.hw.machine import Machine

    pfn = kernel.mm.alloc_folio(0)
    kernel.machine.memory.write(pfn, b"chain")
    kernel.kho_out.preserve_folio(pfn)
    machine = kernel.machine
    for hop in range(hops):
        machine.handover.load(kernel.kho_out.finalize())
        machine.dump(tmp_path / f"hop{hop}")
        machine = Machine.load(tmp_path / f"hop{hop}")
        kernel = Kernel.boot(machine, KHO_V1)
        assert kernel.kho_in is not None
        kernel.kho_in.restore_folio(pfn)
        kernel.kho_out.preserve_folio(pfn)
    assert machine.memory.read(pfn)[:5] == b"chain"
    machine.close()
