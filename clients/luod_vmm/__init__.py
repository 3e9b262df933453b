"""luod_vmm: an example VMM participant of luod (installs as the top-level `luod_vmm`).

It stands in for a real VMM: guest RAM in a memfd, an iommufd mapping it, vfio-pci devices
doing DMA, optionally a guest_memfd; it preserves them in dependency order, takes part in
the update barrier and verifies every byte after the kexec. See CLI.md ("luod-vmm").

Modules, one job each: `main` (command line, streams, exit statuses), `options` (the run's
configuration and its preserved form), `layout` (the object graph derived from it),
`pattern`/`guestmem`/`verify` (guest memory: its bytes, writing them, checking them),
`build` (objects and session in luod), `participant` (the update barrier), `signals`,
`run` and `resume` (the two commands), `devices` and `report` (what resume checks and
says), `sockets` and `errors`.
"""

from __future__ import annotations
