"""Emulated kernel files: what a process holds through a file descriptor.

- `base`: the `File` every kind of file derives from, and the `FileTable` of the one
  emulated process (luod itself) that maps descriptors to files.
- `memfd`: anonymous shared memory whose pages live in emulated RAM.
"""
