"""Fast in-process unit tests, plus smoke tests of the installed console scripts."""

from __future__ import annotations
