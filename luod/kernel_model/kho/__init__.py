"""Kexec HandOver: preserve memory across a kexec and find it again in the next kernel.

- `order_bitmap`: one order's preserved blocks, a bitmap in chunks made on first use.
- `preserved`: the outgoing kernel's set of preserved blocks over all orders, vectorised.
- `memmap_v1`: the `kho-v1` preserved-memory map (bitmaps per order in linked chunks).
- `memmap_v2`: the `kho-v2` preserved-memory map (one radix tree of pages for all orders).
- `formats`: which memory-map format a `compatible` string names.
- `outgoing`: preserve/unpreserve, named subtrees, finalize/abort, the root FDT.
- `incoming`: the next kernel's side: validate, reserve, restore with checks.
"""
