"""The emulated machine: what survives a kexec because it is hardware, not software.

`hw` knows nothing about kernels. It offers physical memory addressed by page frame number
(pfn), a boot handover register, an IOMMU that walks page tables kept in that memory, and
PCI devices whose DMA engines run on their own clock. Every emulated kernel
reads and writes memory only through this package, so what survives a kexec is decided by
memory contents alone.
"""
