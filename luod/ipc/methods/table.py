"""The one method table (`METHODS`) every method module registers into, and the types
they share."""

from __future__ import annotations

from typing import Literal

from luod.ipc.method_table import MethodTable

METHODS = MethodTable()

Direction = Literal["outgoing", "incoming"]
