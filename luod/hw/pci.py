"""PCI devices on the machine's bus, each with a DMA engine that writes through the IOMMU.

This module owns the devices a live update must keep alive: they are hardware, so they
survive a kexec with their state (power state, interrupt enable, a running DMA engine),
and they keep writing to memory while the kernel freezes, kexecs and boots. The machine
steps them with `Machine.advance(ns)`; the kernel and daemon call it between the steps of
an update, so device writes really land during the blackout, and they land only if the
I/O page tables they translate through survived.

DMA engine model. `start(iova, length, seed, rate_hz)` makes the device write one 64-byte
record every 1/rate_hz seconds of its *run time* (time spent running in D0) into a ring of
`length // 64` slots covering the IOVA window [iova, iova + length). Record number k (its
sequence number, from 0) is written at run time `t_k = ceil((k + 1) * 1e9 / rate_hz)` ns
into slot `k % slots`, so after T ns of run time exactly `floor(T * rate_hz / 1e9)` records
have been issued, however T was split into steps. Every record is translated through the
IOMMU (write access); a fault is counted (by the engine and by the IOMMU against the
device) and the engine goes on with the next record, as a device retrying would.

Record format (64 bytes, little-endian, 64-byte aligned so never across a page):
  [0:8]   u64 sequence number k
  [8:16]  u64 t_k, the run time in ns at which the record was written
  [16:64] 6 x u64 pattern words; word i (0..5) = splitmix64(seed + GOLDEN * (6k + i + 1))
          mod 2**64, with GOLDEN = 0x9E3779B97F4A7C15 and splitmix64 the finaliser
          z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
          z ^= z >> 31.
An all-zero slot was never written (t_k > 0, so no record is all zero).

Everything is deterministic given the seed, the rate and the advanced time. Work per step
is bounded by the ring size, not by the time advanced: of the records issued in one step
only the last `slots` can remain in memory, and the page tables cannot change inside one
step, so the engine translates each distinct page once (weighted by how many records hit
it, so fault counts are per record) and writes each slot's newest record once.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from luod.hw.iommu import IOVA_LIMIT, Iommu, parse_bdf
from luod.hw.memory import PAGE_SHIFT, PAGE_SIZE, PhysicalMemory

Int64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
U8Array = npt.NDArray[np.uint8]

RECORD_SIZE = 64
PATTERN_WORDS = 6
NS_PER_S = 1_000_000_000
MAX_RATE_HZ = NS_PER_S  # at most one record per ns of device time
GOLDEN = 0x9E3779B97F4A7C15
RECORD_DTYPE = np.dtype([("seq", "<u8"), ("time_ns", "<u8"), ("pattern", "<u8", (PATTERN_WORDS,))])
_BATCH = 1 << 16  # records per vectorised batch: bounds temporary memory to a few MiB
_VERIFY_CHUNK = 4 << 20  # bytes of ring read at a time by `verify`

DEFAULT_VENDOR_ID = 0x1B36  # Red Hat, Inc. (QEMU's emulated devices)
DEFAULT_DEVICE_ID = 0x0010


# -- the record format ---------------------------------------------------------------------


def record_times(seqs: Int64Array, rate_hz: int) -> U64Array:
    """t_k = ceil((k + 1) * 1e9 / rate_hz) for each k, without int64 overflow."""
    k1 = np.asarray(seqs, dtype=np.int64) + 1
    whole, rest = np.divmod(k1, rate_hz)  # rest < rate_hz <= 1e9, so rest * 1e9 < 2**63
    return (whole.astype(np.uint64) * np.uint64(NS_PER_S)) + (
        (rest * NS_PER_S + rate_hz - 1) // rate_hz
    ).astype(np.uint64)


def pattern_words(seed: int, seqs: Int64Array) -> U64Array:
    """The (n, 6) pattern words of records `seqs` (uint64 arithmetic wraps mod 2**64)."""
    words = np.arange(1, PATTERN_WORDS + 1, dtype=np.uint64)
    k: U64Array = np.asarray(seqs, dtype=np.int64).astype(np.uint64)[:, None]
    z: U64Array = np.uint64(seed) + (k * np.uint64(PATTERN_WORDS) + words) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    result: U64Array = z ^ (z >> np.uint64(31))
    return result


def make_records(seed: int, rate_hz: int, seqs: Int64Array) -> U8Array:
    """The (n, 64) bytes of records `seqs`."""
    seqs = np.asarray(seqs, dtype=np.int64)
    out = np.empty(seqs.size, dtype=RECORD_DTYPE)
    out["seq"] = seqs.astype(np.uint64)
    out["time_ns"] = record_times(seqs, rate_hz)
    out["pattern"] = pattern_words(seed, seqs)
    return out.view(np.uint8).reshape(seqs.size, RECORD_SIZE)


@dataclass(frozen=True)
class RingCheck:
    """What a ring holds compared with a fault-free run that issued `issued` records.

    Each slot is exactly one of: `intact` (the newest record for that slot), `stale` (an
    older genuine record: a later write to the slot faulted), `missing` (zero, though a
    record was due: every write to it faulted), `unwritten` (zero, nothing due yet) or
    `corrupt` (anything else: wrong pattern, time or slot, a future sequence number)."""

    slots: int
    issued: int
    intact: int
    stale: int
    missing: int
    unwritten: int
    corrupt: int
    first_corrupt: int | None  # slot index

    @property
    def ok(self) -> bool:
        """The ring is exactly what a fault-free run leaves: every record in place."""
        return self.corrupt == 0 and self.stale == 0 and self.missing == 0

    @property
    def consistent(self) -> bool:
        """Every byte is a genuine record of this run in its slot; gaps only from faults."""
        return self.corrupt == 0

    def __add__(self, other: RingCheck) -> RingCheck:
        firsts = [s for s in (self.first_corrupt, other.first_corrupt) if s is not None]
        return RingCheck(
            self.slots,
            self.issued,
            self.intact + other.intact,
            self.stale + other.stale,
            self.missing + other.missing,
            self.unwritten + other.unwritten,
            self.corrupt + other.corrupt,
            min(firsts) if firsts else None,
        )


def check_ring(
    data: bytes | U8Array,
    *,
    seed: int,
    rate_hz: int,
    issued: int,
    slots: int | None = None,
    first_slot: int = 0,
) -> RingCheck:
    """Check ring bytes against the records a run with `seed` and `rate_hz` issued.

    `data` holds whole slots starting at slot `first_slot` of a ring of `slots` slots
    (default: `data` is the whole ring), so a large ring can be checked in pieces and the
    results added. Pure: usable on bytes read any way (through the IOMMU, or a memfd)."""
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data.reshape(-1)
    if raw.size % RECORD_SIZE:
        raise ValueError(f"ring data of {raw.size} bytes is not whole {RECORD_SIZE}-byte slots")
    n = raw.size // RECORD_SIZE
    total = n if slots is None else slots
    if first_slot < 0 or first_slot + n > total:
        raise ValueError(f"slots [{first_slot}, {first_slot + n}) outside a ring of {total}")
    records = np.ascontiguousarray(raw).reshape(n, RECORD_SIZE)
    slot = np.arange(first_slot, first_slot + n, dtype=np.int64)
    # The newest sequence number due in each slot, or -1 if none is due yet.
    due = np.where(slot < issued, slot + total * ((issued - 1 - slot) // total), -1)
    zero = ~records.any(axis=1)
    seq_u = records.view(RECORD_DTYPE)["seq"].reshape(n)
    plausible = ~zero & (seq_u < np.uint64(issued))
    seq = np.where(plausible, seq_u, 0).astype(np.int64)
    plausible &= seq % total == slot
    rows = np.flatnonzero(plausible)
    genuine = np.zeros(n, dtype=np.bool_)
    genuine[rows] = (records[rows] == make_records(seed, rate_hz, seq[rows])).all(axis=1)
    corrupt = ~zero & ~genuine
    bad = np.flatnonzero(corrupt)
    return RingCheck(
        slots=total,
        issued=issued,
        intact=int((genuine & (seq == due)).sum()),
        stale=int((genuine & (seq != due)).sum()),
        missing=int((zero & (due >= 0)).sum()),
        unwritten=int((zero & (due < 0)).sum()),
        corrupt=int(bad.size),
        first_corrupt=int(bad[0]) + first_slot if bad.size else None,
    )


# -- the engine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmaWindow:
    iova: int
    length: int
    seed: int
    rate_hz: int

    @property
    def slots(self) -> int:
        return self.length // RECORD_SIZE


class DmaEngine:
    """One device's DMA engine. Counters describe the current run (since `start`)."""

    def __init__(self, bdf: str, memory: PhysicalMemory, iommu: Iommu) -> None:
        self.bdf = parse_bdf(bdf)
        self._memory = memory
        self._iommu = iommu
        self.window: DmaWindow | None = None
        self.running = False
        self.run_ns = 0  # time spent running in D0 since start
        self.issued = 0  # records issued = writes + faults = next sequence number
        self.writes = 0  # records that translated and landed
        self.faults = 0  # records the IOMMU refused

    def start(self, iova: int, length: int, seed: int, rate_hz: int) -> None:
        """Begin a new run on [iova, iova + length): counters restart from zero."""
        if iova < 0 or iova % RECORD_SIZE or length <= 0 or length % RECORD_SIZE:
            raise ValueError(
                f"DMA window [{iova:#x}, +{length:#x}) is not whole {RECORD_SIZE}-byte slots"
            )
        if iova + length > IOVA_LIMIT:
            raise ValueError(f"DMA window [{iova:#x}, +{length:#x}) outside the IOVA space")
        if not 0 <= seed < 1 << 64:
            raise ValueError(f"seed {seed} is not a u64")
        if not 0 < rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate {rate_hz} Hz outside (0, {MAX_RATE_HZ}]")
        self.window = DmaWindow(iova, length, seed, rate_hz)
        self.running = True
        self.run_ns = self.issued = self.writes = self.faults = 0

    def stop(self) -> None:
        """Stop issuing records; the window and counters stay readable."""
        self.running = False

    def reset(self) -> None:
        """Power-on state: idle, no window, counters zero."""
        self.window = None
        self.running = False
        self.run_ns = self.issued = self.writes = self.faults = 0

    def advance(self, ns: int) -> None:
        """Run for `ns` more ns (the caller checks the device is in D0)."""
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        window = self.window
        if not self.running or window is None or not ns:
            return
        self.run_ns += ns
        due = self.run_ns * window.rate_hz // NS_PER_S
        first, end = self.issued, due
        slots = window.slots
        # Only the last `slots` records of this step can still be in memory afterwards;
        # record q of those stands for itself and every earlier record of the step that
        # hit the same slot ((q - first) // slots of them), which translate identically.
        keep_from = max(first, end - slots)
        for lo in range(keep_from, end, _BATCH):
            seqs = np.arange(lo, min(lo + _BATCH, end), dtype=np.int64)
            self._issue(window, seqs, (seqs - first) // slots + 1)
        self.issued = end

    def _issue(self, window: DmaWindow, seqs: Int64Array, weights: Int64Array) -> None:
        iova = window.iova + (seqs % window.slots) * RECORD_SIZE
        pages, inverse = np.unique(iova >> PAGE_SHIFT, return_inverse=True)
        inverse = inverse.reshape(-1)
        page_weights = np.zeros(pages.size, dtype=np.int64)
        np.add.at(page_weights, inverse, weights)
        result = self._iommu.translate_pages(self.bdf, pages, True, page_weights)
        landed = result.faults[inverse] == 0
        self.writes += int(weights[landed].sum())
        self.faults += int(weights[~landed].sum())
        if not landed.any():
            return
        phys = (result.pfns[inverse][landed] << PAGE_SHIFT) + (iova[landed] & (PAGE_SIZE - 1))
        records = make_records(window.seed, window.rate_hz, seqs[landed])
        _scatter(self._memory, phys, records)

    def verify(self) -> RingCheck:
        """Read the whole window through the IOMMU (an uncounted probe: `IommuFault` if it
        does not translate for reading) and check it against this run."""
        window = self.window
        if window is None:
            raise ValueError(f"{self.bdf}: DMA engine was never started")
        total: RingCheck | None = None
        for off in range(0, window.length, _VERIFY_CHUNK):
            n = min(_VERIFY_CHUNK, window.length - off)
            data = b"".join(
                self._memory.read_at((seg.pfn << PAGE_SHIFT) + seg.offset, seg.nbytes)
                for seg in self._iommu.lookup(self.bdf, window.iova + off, n, False)
            )
            part = check_ring(
                data,
                seed=window.seed,
                rate_hz=window.rate_hz,
                issued=self.issued,
                slots=window.slots,
                first_slot=off // RECORD_SIZE,
            )
            total = part if total is None else total + part
        assert total is not None  # length > 0
        return total

    def to_registers(self) -> dict[str, object]:
        window = self.window
        return {
            "window": None
            if window is None
            else [window.iova, window.length, window.seed, window.rate_hz],
            "running": self.running,
            "counters": [self.run_ns, self.issued, self.writes, self.faults],
        }

    def load_registers(self, registers: dict[str, object]) -> None:
        window = registers.get("window")
        counters = registers.get("counters", [0, 0, 0, 0])
        assert isinstance(counters, list) and len(counters) == 4
        self.reset()
        if window is not None:
            assert isinstance(window, list) and len(window) == 4
            self.window = DmaWindow(*(int(x) for x in window))
        self.running = bool(registers.get("running", False)) and self.window is not None
        self.run_ns, self.issued, self.writes, self.faults = (int(x) for x in counters)


def _scatter(memory: PhysicalMemory, phys: Int64Array, records: U8Array) -> None:
    """Write record i at physical address phys[i]; if two records hit the same address
    (two IOVAs aliasing one frame) the later one (higher index) wins, as in time order."""
    # np.unique on the reversed array keeps each address's last occurrence, sorted.
    last = phys.size - 1 - np.unique(phys[::-1], return_index=True)[1]
    phys, records = phys[last], records[last]
    cuts = np.flatnonzero(np.diff(phys) != RECORD_SIZE) + 1
    bounds = [0, *cuts.tolist(), int(phys.size)]
    for lo, hi in itertools.pairwise(bounds):
        start = int(phys[lo])
        memory.write(start >> PAGE_SHIFT, records[lo:hi].tobytes(), start & (PAGE_SIZE - 1))


# -- devices and the bus --------------------------------------------------------------------


class PowerState(enum.Enum):
    D0 = "D0"
    D3HOT = "D3hot"


class PciDevice:
    """A PCI function: power state, interrupt enable, its own clock and a DMA engine.

    The engine runs only in D0: in D3hot the device's clock goes on but its run time (and
    so its record schedule) pauses, and resumes where it stopped on return to D0."""

    def __init__(
        self,
        bdf: str,
        memory: PhysicalMemory,
        iommu: Iommu,
        vendor_id: int = DEFAULT_VENDOR_ID,
        device_id: int = DEFAULT_DEVICE_ID,
    ) -> None:
        self.bdf = parse_bdf(bdf)
        if not (0 <= vendor_id <= 0xFFFF and 0 <= device_id <= 0xFFFF):
            raise ValueError(f"PCI ids {vendor_id:#x}:{device_id:#x} are not u16")
        self.vendor_id = vendor_id
        self.device_id = device_id
        self.power = PowerState.D0
        self.interrupts_enabled = False
        self.clock_ns = 0  # device time since the machine was created
        self.dma = DmaEngine(self.bdf, memory, iommu)

    def advance(self, ns: int) -> None:
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        self.clock_ns += ns
        if self.power is PowerState.D0:
            self.dma.advance(ns)

    def reset(self) -> None:
        """Function-level reset: D0, interrupts off, DMA idle. The clock keeps running."""
        self.power = PowerState.D0
        self.interrupts_enabled = False
        self.dma.reset()

    def to_registers(self) -> dict[str, object]:
        return {
            "bdf": self.bdf,
            "ids": [self.vendor_id, self.device_id],
            "power": self.power.value,
            "interrupts_enabled": self.interrupts_enabled,
            "clock_ns": self.clock_ns,
            "dma": self.dma.to_registers(),
        }


class PciBus:
    """The devices plugged into the machine, keyed by BDF; stepped in BDF order."""

    def __init__(self, memory: PhysicalMemory, iommu: Iommu) -> None:
        self._memory = memory
        self._iommu = iommu
        self._devices: dict[str, PciDevice] = {}

    def add(
        self, bdf: str, *, vendor_id: int = DEFAULT_VENDOR_ID, device_id: int = DEFAULT_DEVICE_ID
    ) -> PciDevice:
        """Plug a device in (hardware configuration, before or between boots)."""
        bdf = parse_bdf(bdf)
        if bdf in self._devices:
            raise ValueError(f"a device is already at {bdf}")
        device = PciDevice(bdf, self._memory, self._iommu, vendor_id, device_id)
        self._devices = dict(sorted({**self._devices, bdf: device}.items()))
        return device

    def __getitem__(self, bdf: str) -> PciDevice:
        try:
            return self._devices[parse_bdf(bdf)]
        except KeyError:
            raise KeyError(self.not_found(bdf)) from None

    def not_found(self, bdf: str) -> str:
        """The message for a BDF that names no device: it lists the ones there are, so a
        plan needs no guessing."""
        if not self._devices:
            return f"no PCI device at {bdf}: the machine has none"
        return f"no PCI device at {bdf}; the machine has {', '.join(self._devices)}"

    def __contains__(self, bdf: object) -> bool:
        if not isinstance(bdf, str):
            return False
        try:
            return parse_bdf(bdf) in self._devices
        except ValueError:
            return False

    def __iter__(self) -> Iterator[PciDevice]:
        return iter(list(self._devices.values()))

    def __len__(self) -> int:
        return len(self._devices)

    def advance(self, ns: int) -> None:
        """Step every device by `ns`, one after another in BDF order. Ordering between two
        devices inside one step is not modelled: step finely if it matters."""
        if ns < 0:
            raise ValueError(f"cannot advance by {ns} ns")
        for device in self._devices.values():
            device.advance(ns)

    def reset(self) -> None:
        """Bus reset (power cycle): every device reset; the devices stay plugged in."""
        for device in self._devices.values():
            device.reset()

    def to_registers(self) -> list[dict[str, object]]:
        return [device.to_registers() for device in self._devices.values()]

    def load_registers(self, registers: list[dict[str, object]]) -> None:
        self._devices.clear()
        for entry in registers:
            ids = entry["ids"]
            assert isinstance(ids, list) and len(ids) == 2
            device = self.add(str(entry["bdf"]), vendor_id=int(ids[0]), device_id=int(ids[1]))
            device.power = PowerState(entry["power"])
            device.interrupts_enabled = bool(entry["interrupts_enabled"])
            clock = entry["clock_ns"]
            assert isinstance(clock, int)
            device.clock_ns = clock
            dma = entry["dma"]
            assert isinstance(dma, dict)
            device.dma.load_registers(dma)
