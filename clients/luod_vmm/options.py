"""What a VMM run is: its name and the shape of its guest, and how that crosses a kexec.

`VmmOptions` is the whole configuration of `luod-vmm run` (memory size, page size, device
count and DMA rate, sparse or dense pattern, guest_memfd). Everything else (object names,
tokens, IOVAs, DMA windows, pattern seeds) is derived from it (`luod_vmm.layout`), so this
small record is all `resume` needs to learn. It crosses the kexec the only way anything
does in the emulation: as bytes in a memfd preserved in the same session
(`to_config`/`from_config`), the way a real VMM keeps its own state in preserved memory.
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from luod.units import format_size

__all__ = [
    "CONFIG_FORMAT",
    "DEFAULT_DMA_RATE",
    "MAX_DMA_RATE",
    "MAX_VFIO",
    "PAGE_SIZES",
    "ConfigError",
    "VmmOptions",
]

PAGE_SIZES: Final = {"4K": 4096, "2M": 2 << 20, "1G": 1 << 30}
"""`--page-size` choices and their byte counts (2M and 1G come from the hugetlb pools)."""
MAX_VFIO: Final = 64
DEFAULT_DMA_RATE: Final = 100_000
"""Records per second each device writes. luod emulates DMA on its own thread of control:
at 1M records/s four devices keep it busy most of the time (see bench/vmm.py)."""
MAX_DMA_RATE: Final = 1_000_000_000
CONFIG_FORMAT: Final = "luod-vmm-config-v1"
"""The `format` tag of the preserved config; a reader refuses any other."""


class ConfigError(ValueError):
    """Options that cannot describe a VMM, or a config memfd that does not parse."""


@attrs.frozen
class VmmOptions:
    """The options of `luod-vmm run NAME`; validated on construction (ConfigError)."""

    name: str
    memory: int
    page_size: int = 4096
    vfio: int = 1
    guest_memfd: bool = False
    sparse: bool = False
    dma_rate: int = DEFAULT_DMA_RATE

    def __attrs_post_init__(self) -> None:
        if not self.name or len(self.name) > 64 or not self.name.isprintable():
            raise ConfigError(f"invalid VMM name {self.name!r}: 1-64 printable characters")
        if self.page_size not in PAGE_SIZES.values():
            raise ConfigError(f"page size {self.page_size} is not 4K, 2M or 1G")
        if self.memory <= 0 or self.memory % self.page_size:
            raise ConfigError(
                f"memory {format_size(self.memory)} is not a positive multiple of the "
                f"{format_size(self.page_size)} page size"
            )
        if not 0 <= self.vfio <= MAX_VFIO:
            raise ConfigError(f"--vfio {self.vfio} is outside 0..{MAX_VFIO}")
        if not 0 < self.dma_rate <= MAX_DMA_RATE:
            raise ConfigError(f"--dma-rate {self.dma_rate} is outside 1..{MAX_DMA_RATE}")

    def describe(self) -> str:
        """One phrase for humans: `64M guest RAM in 2M pages (sparse), 1 vfio-pci device`."""
        kind = "sparse" if self.sparse else "dense"
        devices = f"{self.vfio} vfio-pci device{'' if self.vfio == 1 else 's'}"
        gmem = ", a guest_memfd" if self.guest_memfd else ""
        return (
            f"{format_size(self.memory)} guest RAM in {format_size(self.page_size)} pages "
            f"({kind}), {devices}{gmem}"
        )

    # -- the preserved form ---------------------------------------------------------------

    def to_config(self) -> bytes:
        """The bytes preserved in the session: a small JSON document."""
        return json.dumps({"format": CONFIG_FORMAT, **attrs.asdict(self)}, sort_keys=True).encode()

    @classmethod
    def from_config(cls, raw: bytes) -> VmmOptions:
        """Parse what `to_config` wrote, strictly (exact keys and types)."""
        try:
            doc: Any = json.loads(raw.rstrip(b"\0").decode())
        except (UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"the config is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
            raise ConfigError(f"the config is not a {CONFIG_FORMAT} document")
        fields = {f.name: f.type for f in attrs.fields(cls)}
        if set(doc) != {"format", *fields}:
            raise ConfigError(f"the config has keys {sorted(doc)}, not those of {CONFIG_FORMAT}")
        types = {"str": str, "int": int, "bool": bool}
        for name, type_name in fields.items():
            want = types[str(type_name)]
            value = doc[name]
            if type(value) is not want:
                raise ConfigError(f"config field {name!r} is not a {want.__name__}: {value!r}")
        return cls(**{name: doc[name] for name in fields})
