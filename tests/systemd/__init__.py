"""Tests of luod's systemd integration: the unit files, sd_notify and socket activation."""

from __future__ import annotations
