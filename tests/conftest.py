"""Suite-wide pytest configuration.

pytest-trio runs in trio mode (pyproject.toml), so `async def` tests need no marker. Tests
marked `slow` (stress, soak) are deselected by default and run with `make test-slow`.
Shared fixtures go here once more than one test folder needs them.
"""

from __future__ import annotations
