"""The daemon process's memory across updates: keep luod's resident memory flat.

A kexec turns the old kernel's whole object graph into garbage: the kernel, its LUO, its
handlers and files, with their numpy arrays (KHO bitmaps and radix trees, IOMMU page
tables, records). That graph is full of reference cycles (kernel <-> LUO <-> handlers), so
only a full collection frees it, and Python runs those rarely: meanwhile dead kernels pile
up, the C heap grows and fragments, and the soak showed luod's memory creeping up by about
1% per update cycle. `after_kexec` collects right away and gives the free pages of the
heap back; the orchestrator calls it once the update's record is out, outside the
blackout.

Inside the blackout no automatic collection runs (a `CollectionPause` from its start to
its end): the allocations of an update's setup can leave the collector's counters just
short of a full collection, which then ran in the blackout and took 12-15 ms of a 4-6 ms
one (bench/vmm.py's memfd baseline, in most samples after a `make bench` run).
A blackout allocates little, and `after_kexec` collects right after it anyway. The pause
also covers the freeze barrier's wait for participants (at most the update's deadline),
while other clients are still served: reference counting still frees what they drop, only
cycles wait for the collection after.
"""

from __future__ import annotations

import ctypes
import gc


class CollectionPause:
    """Automatic collection off between `begin` and `end` (nothing changes if the
    collector was off already: `end` turns on only what `begin` turned off)."""

    def __init__(self) -> None:
        self.active = False

    def begin(self) -> None:
        if gc.isenabled():
            gc.disable()
            self.active = True

    def end(self) -> None:
        if self.active:
            gc.enable()
            self.active = False


def after_kexec() -> None:
    """Free the old kernel now, then return the heap's free pages (glibc's malloc_trim;
    nothing happens on a C library without it)."""
    gc.collect()
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    malloc_trim(0)
