"""luoctl: the bundled command-line client of luod (installs as the top-level `luoctl`).

A thin, synchronous client: argparse and a blocking stdlib socket (`luod.ipc.client`). It
is started once per shell command, so start-up time matters: importing it must not load
trio, numpy, structlog or cattrs (tests/unit/test_cli_scaffold.py checks the import
graph); cattrs arrives with the first message, through the protocol's converter.

Layout: `main` (the run), `cli` (the command line, with the argument types of
`luod.cli.argtypes`), `commands`, `memfd`, `events`, `progress` (what each command does),
`link` + `sockets` (the connection), `failures` (errors, with the exit statuses of
`luod.cli.exitcodes`), `output`, `human*`, `table` (printing).
"""

from __future__ import annotations
