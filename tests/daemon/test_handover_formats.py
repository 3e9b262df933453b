"""The handover blob, decoded from raw bytes by this test alone, holds exactly the formats
`session show` reports: the KHO root's compatible, the LUO root's, and the compatible of
every file table entry and FLB entry, for pairs of each generation (luo-v1 FDT root and
luo-v2 raw struct, kho-v1 and kho-v2, dense and sparse memfd records)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from luod.daemon.host import Host
from luod.daemon.owners import OWNERS_SESSION, Caller
from luod.hw.memory import PAGE_SIZE
from luod.ipc.plans import IommuMap, ObjectSpec, Plan, PlanSession
from luod.kernel_model.fdt import decode_fdt
from luod.kernel_model.images import resolve
from luod.kernel_model.kernel import BootConfig

ROOT = Caller(uid=0)
FDT_MAGIC = b"\xd0\x0d\xfe\xed"
LUO_SER = struct.Struct("<48sIIQQQ")  # luo-v2: compatible, size, flags, number, sessions, flbs
SESSION_ENTRY = struct.Struct("<64sQQQ")
FILE_ENTRY = struct.Struct("<48sQQ")
FLB_ENTRY = struct.Struct("<48sQQ")

PAIRS = [
    ("6.19.0", "6.19.0"),  # kho-v1, luo-v1 FDT, memfd-v1
    ("7.2.0", "7.1.0"),  # a 2026 kernel writing the 2025 formats for a rollback
    ("7.2.0", "7.3.0"),  # kho-v2, luo-v2 struct, memfd-v2
    ("7.3.0", "7.3.0"),  # kho-v2, luo-v2 struct, sparse memfd-v3
]


def cstr(raw: bytes) -> str:
    return raw.partition(b"\0")[0].decode()


def plan(devices: bool) -> Plan:
    objects = [ObjectSpec("cache", "memfd", token=1, size=1 << 30)]
    if devices:
        objects += [
            ObjectSpec("ram", "memfd", token=2, size=4 << 20),
            ObjectSpec("iommu", "iommufd", token=3, maps=[IommuMap("ram")]),
            ObjectSpec("nic", "vfio-pci", token=4, iommufd="iommu", bdf="0000:01:00.0"),
            ObjectSpec("huge", "memfd", token=5, size=4 << 20, page_size=2 << 20),
            ObjectSpec("vm", "kvm-vm", token=6),
            ObjectSpec("gmem", "guest_memfd", token=7, vm="vm", size=2 << 20),
        ]
    return Plan([PlanSession("vm1", objects)])


@pytest.fixture(params=PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def frozen(request: pytest.FixtureRequest) -> Iterator[tuple[Host, str]]:
    source, target = request.param
    host = Host(
        ram=4 << 30,
        image=resolve(source),
        config=BootConfig(hugetlb=((2 << 20, 8),)),
        pci=1,
    )
    try:
        host.apply(ROOT, plan(devices="iommufd-v1" in host.kernel.image.reads))
        host.kernel.load(resolve(target))
        host.prepare()
        host.kernel.freeze()
        yield host, target
    finally:
        host.close()


def decode_handover(host: Host) -> dict[str, object]:
    """Everything the blob names, from the KHO root the handover register points at."""
    memory = host.machine.memory
    kho = decode_fdt(memory.read_at(host.kernel.kho_out.root_phys, PAGE_SIZE))
    luo_node = next(n for n in kho.children if n.name == "LUO")
    root = memory.read_at(luo_node.get_u64("preserved-data"), luo_node.get_u64("blob-size"))
    if root[:4] == FDT_MAGIC:
        tree = decode_fdt(root)
        luo_compatible = tree.get_str("compatible")
        sessions_node, flbs_node = tree.child("luo-session"), tree.child("luo-flb")
        assert sessions_node is not None and flbs_node is not None
        sessions_phys = sessions_node.get_u64("luo-session-header")
        flbs_phys = flbs_node.get_u64("luo-flb-header")
    else:
        raw, size, flags, _, sessions_phys, flbs_phys = LUO_SER.unpack_from(root)
        assert (size, flags) == (LUO_SER.size, 0)
        luo_compatible = cstr(raw)
    (count,) = struct.unpack("<Q", memory.read_at(sessions_phys, 8))
    table = memory.read_at(sessions_phys + 8, count * SESSION_ENTRY.size)
    files: dict[str, dict[int, str]] = {}
    for i in range(count):
        name, files_phys, nfiles, _ = SESSION_ENTRY.unpack_from(table, i * SESSION_ENTRY.size)
        entries = memory.read_at(files_phys, nfiles * FILE_ENTRY.size)
        files[cstr(name)] = {
            token: cstr(compat) for compat, _, token in FILE_ENTRY.iter_unpack(entries)
        }
    _, nflbs = struct.unpack("<QQ", memory.read_at(flbs_phys, 16))
    flb_table = memory.read_at(flbs_phys + 16, nflbs * FLB_ENTRY.size)
    return {
        "kho": kho.get_str("compatible"),
        "luo": luo_compatible,
        "files": files,
        "flbs": {cstr(name) for name, _, _ in FLB_ENTRY.iter_unpack(flb_table)},
    }


def test_blob_holds_exactly_what_session_show_reports(frozen: tuple[Host, str]) -> None:
    host, target = frozen
    luo = host.kernel.liveupdate()
    shown = host.session_object(host.outgoing(ROOT, "vm1"))
    blob = decode_handover(host)
    assert blob["kho"] == luo.formats["kho"]
    assert blob["luo"] == luo.formats["luo"]
    files = blob["files"]
    assert isinstance(files, dict)
    assert files["vm1"] == {f["token"]: f["format"] for f in shown["files"]}
    assert None not in files["vm1"].values()
    assert files[OWNERS_SESSION] == {0: luo.formats["memfd"]}  # luod's own state
    assert sorted(files) == sorted(["vm1", OWNERS_SESSION])
    flb_formats = {c for layer, c in luo.formats.items() if layer.startswith("flb:")}
    assert blob["flbs"] == flb_formats
    # and the target reads every one of them: that is what negotiation was for
    written = {blob["kho"], blob["luo"], *files["vm1"].values(), *flb_formats}
    assert written <= resolve(target).reads
