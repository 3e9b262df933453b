"""Every format a bundled image may claim is really implemented: written, read back, and
different in its bytes from the other versions of its layer. Plus what is particular to
each memfd format: when holes are filled, and that memfd-v3 keeps them holes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from luod.hw.machine import Machine
from luod.hw.memory import PAGE_SIZE
from luod.kernel_model import catalog
from luod.kernel_model.errors import KernelError
from luod.kernel_model.filetypes import HANDLER_TYPES, default_flbs
from luod.kernel_model.images import KernelImage, bundled_images, parse_image, resolve
from luod.kernel_model.kernel import Kernel
from luod.kernel_model.kho.formats import FORMATS as KHO_FORMATS
from luod.kernel_model.luo import serialize
from luod.kernel_model.memfd.file import MemfdFile
from luod.kernel_model.memfd.handler import MemfdHandler
from luod.kernel_model.memfd.records import HEADER_V1, HEADER_V2, HEADER_V3
from luod.kernel_model.negotiate import formats_of

from .conftest import new_memfd, opened
from .workload import CONFIG, SESSION, Workload, new_machine

EVERY_FORMAT = sorted(catalog.FORMAT_LAYERS)
GiB = 1 << 30


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = new_machine()
    yield m
    m.close()


def writing(compatible: str) -> KernelImage:
    """A test image that reads every format and writes `compatible` for its layer (the
    newest format of every other layer)."""
    layers = sorted(set(catalog.FORMAT_LAYERS.values()))
    newest = resolve("7.3.0")
    current = []
    for layer in layers:
        if layer == catalog.FORMAT_LAYERS[compatible]:
            current.append(compatible)
        else:
            current.append((newest.writes_for(layer) or formats_of(layer))[0])
    quoted = ", ".join(f'"{c}"' for c in EVERY_FORMAT)
    text = f'release = "writes-{compatible}"\nreads = [{quoted}]\n[profiles]\ncurrent = ['
    text += ", ".join(f'"{c}"' for c in current) + "]\n"
    return parse_image(text, f"test image writing {compatible}")


def test_every_catalog_format_has_a_writer_and_a_reader() -> None:
    handler_formats = {c for h in HANDLER_TYPES for c in h.formats}
    flb_formats = {flb.compatible for _, flb in default_flbs(None)}  # type: ignore[arg-type]
    for compatible, layer in catalog.FORMAT_LAYERS.items():
        if layer == catalog.KHO:
            assert compatible in KHO_FORMATS
        elif layer == catalog.LUO:
            assert compatible in serialize.ROOT_FORMATS
        elif layer.startswith("flb:"):
            assert compatible in flb_formats
        else:
            assert compatible in handler_formats
    implemented = set(KHO_FORMATS) | set(serialize.ROOT_FORMATS) | handler_formats | flb_formats
    assert implemented == set(catalog.FORMAT_LAYERS), "the catalog names what exists"
    for image in bundled_images():
        assert image.reads <= set(catalog.FORMAT_LAYERS)


@pytest.mark.parametrize("compatible", EVERY_FORMAT)
def test_every_format_round_trips_through_a_kexec(machine: Machine, compatible: str) -> None:
    """Written by one kernel, read by the next: the data of every object comes back."""
    image = writing(compatible)
    kernel = Kernel.cold_boot(machine, image, CONFIG)
    workload = Workload(devices=True)
    workload.build(kernel, seed=len(compatible))
    workload.preserve(kernel)
    kernel.prepare()
    luo = kernel.liveupdate()
    layer = catalog.FORMAT_LAYERS[compatible]
    assert luo.formats[layer] == compatible
    kernel.freeze()
    nxt = kernel.kexec()
    assert nxt.boot_report.kind == "kho"
    assert nxt.kho_in is not None
    found = {nxt.kho_in.compatible}
    phys, size = nxt.kho_in.subtrees[serialize.SUBTREE]  # read before the first open frees it
    found.add(serialize.root_compatible(nxt.memory.read_at(phys, size)) or "?")
    nluo = opened(nxt).liveupdate()
    found |= {f.compatible for f in nluo.incoming[SESSION].files}
    found |= set(nluo.incoming_flbs())
    assert compatible in found
    workload.check_after(nxt, luo.formats["memfd"])


def test_luo_roots_differ_and_name_themselves() -> None:
    blobs = {c: f.encode(7, 0x1000, 0x2000) for c, f in serialize.ROOT_FORMATS.items()}
    assert blobs["luo-v1"] != blobs["luo-v2"]
    assert blobs["luo-v1"][:4] == b"\xd0\x0d\xfe\xed"  # an FDT
    assert blobs["luo-v2"][:7] == b"luo-v2\0"  # a struct with its compatible first
    for compatible, blob in blobs.items():
        assert serialize.root_compatible(blob) == compatible
        assert serialize.ROOT_FORMATS[compatible].decode(blob) == (7, 0x1000, 0x2000)


def memfd_record(machine: Machine, compatible: str) -> tuple[bytes, bytes]:
    """(header, entry table) of one memfd's record in `compatible`, the memfd the same
    for every format: 1 MiB, 2 pages written, a hole between them."""
    kernel = Kernel.cold_boot(machine, writing(compatible), CONFIG)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"first page")
    memfd.truncate(1 << 20)
    memfd.write(200 * PAGE_SIZE, b"second")
    luo.preserve(luo.create_session("s"), 1, memfd)
    kernel.prepare()
    f = luo.outgoing["s"].files[0]
    assert f.data is not None and f.compatible == compatible
    header = kernel.memory.read_at(f.data, 64)
    size = {"memfd-v1": HEADER_V1, "memfd-v2": HEADER_V2, "memfd-v3": HEADER_V3}[compatible].size
    handler = luo.handler_for_type("memfd")
    assert isinstance(handler, MemfdHandler)
    fields = handler.parse_header(compatible, header)
    entry = 24 if compatible == "memfd-v3" else 16
    table = kernel.memory.read_at(fields["folios_phys"], fields["nr"] * entry)
    kernel.cancel()
    return header[:size], table


def test_memfd_records_differ_and_v3_lists_extents(machine: Machine) -> None:
    records = {c: memfd_record(machine, c) for c in ("memfd-v1", "memfd-v2", "memfd-v3")}
    headers = [h for h, _ in records.values()]
    assert [len(h) for h in headers] == [40, 48, 56]
    assert len(set(headers)) == 3
    # dense: one 16-byte entry per page of the 1 MiB (holes filled); sparse: 2 extents
    assert len(records["memfd-v1"][1]) == len(records["memfd-v2"][1]) == 256 * 16
    assert len(records["memfd-v3"][1]) == 2 * 24


def test_v3_keeps_holes_holes(machine: Machine) -> None:
    kernel = Kernel.cold_boot(machine, resolve("7.3.0"), CONFIG)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel)
    memfd.truncate(GiB)
    memfd.write(12345 * PAGE_SIZE + 7, b"one page written")
    luo.preserve(luo.create_session("s"), 1, memfd)
    kernel.prepare()
    assert luo.formats["memfd"] == "memfd-v3"
    assert memfd.populated_folios() == 1, "no hole was filled"
    kernel.freeze()
    nxt = opened(kernel.kexec())
    nluo = nxt.liveupdate()
    got = nluo.retrieve_file(nluo.retrieve_session("s"), 1)
    assert isinstance(got, MemfdFile)
    assert got.size == GiB and got.populated_folios() == 1
    assert got.read(12345 * PAGE_SIZE + 7, 16) == b"one page written"
    assert got.read(0, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert got.read(GiB - PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert got.populated_folios() == 1, "reading a hole does not fill it"


def test_dense_formats_fill_holes_at_prepare_and_cancel_gives_back(machine: Machine) -> None:
    kernel = Kernel.cold_boot(machine, resolve("7.0.0"), CONFIG)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"data")
    memfd.truncate(64 * PAGE_SIZE)
    luo.preserve(luo.create_session("s"), 1, memfd)
    kho = kernel.kho_out.preserved
    at_preserve = kho.frame_count()
    assert memfd.populated_folios() == 1, "preserve pins only what is populated"
    kernel.prepare()
    assert luo.formats["memfd"] == "memfd-v2"
    assert memfd.populated_folios() == 64, "the dense record needs every page"
    assert kho.frame_count() >= at_preserve + 63
    kernel.cancel()
    assert kho.frame_count() == at_preserve, "cancel unpreserves what prepare added"
    assert memfd.populated_folios() == 64  # the filled folios stay, zeroed
    assert memfd.read(0, 4) == b"data" and memfd.read(PAGE_SIZE, 8) == bytes(8)
    kernel.prepare()  # and a second prepare preserves them again
    kernel.freeze()
    nxt = opened(kernel.kexec())
    nluo = nxt.liveupdate()
    got = nluo.retrieve_file(nluo.retrieve_session("s"), 1)
    assert isinstance(got, MemfdFile)
    assert got.populated_folios() == 64 and got.read(0, 4) == b"data"
    assert got.read(PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)


@pytest.mark.parametrize("when", ["after preserve", "after prepare"])
def test_v3_keeps_what_is_written_into_a_hole(machine: Machine, when: str) -> None:
    """Holes stay holes under v3, so a write can populate one while the file is preserved:
    prepare (or, after prepare, freeze) preserves the new folio and lists it."""
    kernel = Kernel.cold_boot(machine, resolve("7.3.0"), CONFIG)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"head")
    memfd.truncate(GiB)
    luo.preserve(luo.create_session("s"), 1, memfd)
    if when == "after prepare":
        kernel.prepare()
    memfd.write(GiB - PAGE_SIZE, b"late write into a hole")
    if when == "after preserve":
        kernel.prepare()
    kernel.freeze()
    nxt = opened(kernel.kexec())
    nluo = nxt.liveupdate()
    got = nluo.retrieve_file(nluo.retrieve_session("s"), 1)
    assert isinstance(got, MemfdFile)
    assert got.read(GiB - PAGE_SIZE, 22) == b"late write into a hole"
    assert got.read(0, 4) == b"head" and got.populated_folios() == 2


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [(48, 12345, "header says"), (-1, 0, "empty"), (-1, 1 << 62, "larger than RAM")],
)
def test_hostile_v3_extents_are_eio(machine: Machine, field: int, value: int, why: str) -> None:
    """A v3 record whose extents disagree with its header, are empty or claim more than
    RAM is refused before anything is sized from it."""
    kernel = Kernel.cold_boot(machine, resolve("7.3.0"), CONFIG)
    luo = kernel.liveupdate()
    memfd = new_memfd(kernel, b"x" * PAGE_SIZE * 3)
    luo.preserve(luo.create_session("s"), 1, memfd)
    nxt = opened(update_into_itself(kernel))
    nluo = nxt.liveupdate()
    session = nluo.retrieve_session("s")
    f = session.files[0]
    if field < 0:  # the first extent's npages
        table = int.from_bytes(nxt.memory.read_at(f.data + 32, 8), "little")
        nxt.memory.write(table // PAGE_SIZE, value.to_bytes(8, "little"), table % PAGE_SIZE + 16)
    else:
        nxt.memory.write(f.data // PAGE_SIZE, value.to_bytes(8, "little"), field)
    with pytest.raises(KernelError) as info:
        nluo.retrieve_file(session, 1)
    assert info.value.errno_name == "EIO" and why in info.value.message


def update_into_itself(kernel: Kernel) -> Kernel:
    kernel.prepare()
    kernel.freeze()
    return kernel.kexec()
