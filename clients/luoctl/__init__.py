"""luoctl: the bundled command-line client of luod (installs as the top-level `luoctl`).

A thin, synchronous client: argparse and a blocking stdlib socket. It is started once per
shell command, so start-up time matters: nothing here may import trio, numpy, structlog
or cattrs (tests/unit/test_cli_scaffold.py checks the import graph).
"""

from __future__ import annotations
