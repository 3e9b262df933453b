"""luod's test suite (a package so that test modules in different folders may share names)."""

from __future__ import annotations
