"""What luod's command-line clients share: exit statuses and argparse argument types.

Owns the parts of CLI.md (docs/cli.md) that `luoctl` and `luod-vmm` must agree on, so each
exists once: `exitcodes.ExitCode` (the exit-status contract) and `argtypes` (tokens, sizes,
seal lists, counts, seconds). The clients may import this package and must not import each
other. It imports only the stdlib and `luod.units`: `luoctl` loads it on every run, and its
start-up stays cheap (no trio, numpy, cattrs or structlog).
"""
