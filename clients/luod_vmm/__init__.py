"""luod_vmm: an example VMM participant of luod (installs as the top-level `luod_vmm`).

It stands in for a real VMM: guest RAM in a memfd, an iommufd mapping it, vfio-pci devices
doing DMA, optionally a guest_memfd; it preserves them in dependency order, takes part in
the update barrier and verifies every byte after the kexec. See CLI.md ("luod-vmm").
"""

from __future__ import annotations
