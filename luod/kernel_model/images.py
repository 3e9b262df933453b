"""Kernel images as data: a release and its format catalog, loaded from TOML files.

An image file is what a kernel build would report about live update ("kbuild report"):

    release = "7.0.0"                      # required, unique among bundled images
    summary = "one line"                   # optional
    reads = ["kho-v1", "luo-v1", ...]      # every compatible this kernel can read
    [profiles]                             # what it can write, in order of preference
    current = ["kho-v1", "luo-v1", "memfd-v2"]
    previous = ["kho-v1", "luo-v1", "memfd-v1"]
    [write]                                # optional per-format write switches (default on)
    "memfd-v1" = true

Every compatible must be one the model implements (`catalog.FORMAT_LAYERS`), each profile
names at most one format per layer, `current` must cover the KHO and LUO layers, and a
kernel must read what it writes. Errors name the file, the key and the problem. Bundled
images live beside this module; `resolve` accepts a bundled release or a file path.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from luod.kernel_model.catalog import FORMAT_LAYERS, KHO, LUO


class ImageError(ValueError):
    """A kernel image file is malformed or cannot be found."""


@attrs.frozen
class KernelImage:
    release: str
    reads: frozenset[str]
    profiles: tuple[tuple[str, tuple[str, ...]], ...]  # (name, formats), preference order
    summary: str = ""
    write_switches: tuple[tuple[str, bool], ...] = ()
    source: str = "bundled"

    def profile(self, name: str) -> tuple[str, ...]:
        return dict(self.profiles)[name]

    def writable(self) -> list[str]:
        """Every format this kernel can write, most preferred first, switches applied."""
        switches = dict(self.write_switches)
        seen: list[str] = []
        for _, formats in self.profiles:
            for compatible in formats:
                if compatible not in seen and switches.get(compatible, True):
                    seen.append(compatible)
        return seen

    def writes_for(self, layer: str) -> list[str]:
        return [c for c in self.writable() if FORMAT_LAYERS[c] == layer]

    def reads_for(self, layer: str) -> frozenset[str]:
        return frozenset(c for c in self.reads if FORMAT_LAYERS[c] == layer)

    @property
    def kho_write(self) -> str:
        return self.writes_for(KHO)[0]

    def reads_kho(self) -> frozenset[str]:
        return self.reads_for(KHO)


def _fail(source: str, key: str, problem: str) -> ImageError:
    return ImageError(f"kernel image {source}: {key}: {problem}")


def _str_list(data: Mapping[str, Any], key: str, source: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, key, "must be a list of strings")
    for compatible in value:
        if compatible not in FORMAT_LAYERS:
            known = ", ".join(sorted(FORMAT_LAYERS))
            raise _fail(source, key, f"unknown format {compatible!r} (known: {known})")
    if len(set(value)) != len(value):
        raise _fail(source, key, "lists a format twice")
    return value


def parse_image(text: str, source: str) -> KernelImage:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, "(file)", f"not valid TOML: {exc}") from None
    unknown = set(data) - {"release", "summary", "reads", "profiles", "write"}
    if unknown:
        raise _fail(source, sorted(unknown)[0], "unknown key")
    release = data.get("release")
    if not isinstance(release, str) or not release.strip():
        raise _fail(source, "release", "must be a non-empty string")
    summary = data.get("summary", "")
    if not isinstance(summary, str):
        raise _fail(source, "summary", "must be a string")
    reads = _str_list(data, "reads", source)
    raw_profiles = data.get("profiles")
    if not isinstance(raw_profiles, dict) or "current" not in raw_profiles:
        raise _fail(source, "profiles", "must be a table with at least `current`")
    profiles: list[tuple[str, tuple[str, ...]]] = []
    for name in ["current", *(p for p in raw_profiles if p != "current")]:
        formats = _str_list(raw_profiles, name, f"{source}: profiles")
        layers = [FORMAT_LAYERS[c] for c in formats]
        if len(set(layers)) != len(layers):
            raise _fail(source, f"profiles.{name}", "names two formats of one layer")
        unreadable = [c for c in formats if c not in reads]
        if unreadable:
            raise _fail(source, f"profiles.{name}", f"writes {unreadable[0]!r} it cannot read")
        profiles.append((name, tuple(formats)))
    current_layers = {FORMAT_LAYERS[c] for c in profiles[0][1]}
    for layer in (KHO, LUO):
        if layer not in current_layers:
            raise _fail(source, "profiles.current", f"has no {layer} format")
    raw_write = data.get("write", {})
    if not isinstance(raw_write, dict):
        raise _fail(source, "write", "must be a table of format = true|false")
    switches: list[tuple[str, bool]] = []
    for compatible, on in raw_write.items():
        if compatible not in FORMAT_LAYERS or not isinstance(on, bool):
            raise _fail(source, f"write.{compatible}", "must be a known format set to true|false")
        switches.append((compatible, on))
    return KernelImage(
        release=release.strip(),
        reads=frozenset(reads),
        profiles=tuple(profiles),
        summary=summary,
        write_switches=tuple(switches),
        source=source,
    )


def load_image_file(path: Path) -> KernelImage:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ImageError(f"kernel image {path}: cannot be read: {exc.strerror}") from None
    return parse_image(text, str(path))


def _release_key(release: str) -> tuple[tuple[int, str], ...]:
    return tuple(
        (int(p), "") if p.isdigit() else (-1, p) for p in release.replace("-", ".").split(".")
    )


@cache
def bundled_images() -> tuple[KernelImage, ...]:
    """Every bundled image, oldest release first."""
    folder = resources.files("luod.kernel_model") / "images"
    images = [
        parse_image(entry.read_text(), f"bundled {entry.name}")
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    ]
    releases = [i.release for i in images]
    if len(set(releases)) != len(releases):
        raise ImageError("bundled kernel images repeat a release")
    return tuple(sorted(images, key=lambda i: _release_key(i.release)))


def newest_image() -> KernelImage:
    return bundled_images()[-1]


def resolve(target: str) -> KernelImage:
    """A bundled release string, or the path of an image file."""
    for image in bundled_images():
        if image.release == target:
            return image
    path = Path(target)
    if path.suffix == ".toml" or path.exists() or "/" in target:
        return load_image_file(path)
    known = ", ".join(i.release for i in bundled_images())
    raise ImageError(f"no bundled kernel release {target!r} (bundled: {known}) and no such file")


def default_image() -> KernelImage:
    return newest_image()
