"""luod.units: binary size parsing and formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from luod.units import format_size, parse_size

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("64K", 64 * K),
        ("64k", 64 * K),
        ("64KiB", 64 * K),
        ("2M", 2 * M),
        ("2m", 2 * M),
        ("2MiB", 2 * M),
        ("2mib", 2 * M),
        ("1G", G),
        ("1GiB", G),
        ("64G", 64 * G),
        ("1T", T),
        ("1TiB", T),
        ("3t", 3 * T),
        (" 2M\n", 2 * M),
    ],
)
def test_parse_size_accepts_plain_and_binary_units(text: str, expected: int) -> None:
    """Every documented spelling parses to the binary multiple."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "K", "-1", "+1", "1.5G", "2MB", "2 M", "2Mi", "2X", "1P", "0x10", "1_000", "\uff12M"],
)
def test_parse_size_rejects_bad_text_naming_it(text: str) -> None:
    """Anything but digits plus an optional K/M/G/T (or KiB...) is a ValueError quoting it."""
    with pytest.raises(ValueError, match="invalid size") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (1000, "1000"),
        (4096, "4K"),
        (3 * K, "3K"),
        (2 * M, "2M"),
        (1536 * K, "1536K"),
        (G, "1G"),
        (64 * G, "64G"),
        (1024 * G, "1T"),
        (5 * T, "5T"),
        (1024 * T, "1024T"),
    ],
)
def test_format_size_uses_largest_exact_unit(n: int, expected: str) -> None:
    """The largest unit that divides exactly wins; otherwise plain bytes."""
    assert format_size(n) == expected


def test_format_size_rejects_negative() -> None:
    """A negative byte count has no size form."""
    with pytest.raises(ValueError, match="-1"):
        format_size(-1)


@given(st.integers(min_value=0, max_value=1 << 62))
def test_format_then_parse_round_trips(n: int) -> None:
    """format_size's output always parses back to the same number."""
    assert parse_size(format_size(n)) == n


@given(
    st.integers(min_value=0, max_value=1 << 20),
    st.sampled_from(["", "K", "M", "G", "T", "k", "KiB", "mib", "GiB", "tib"]),
)
def test_parse_then_format_is_canonical(num: int, unit: str) -> None:
    """Any accepted spelling formats to one canonical text that parses to the same value."""
    value = parse_size(f"{num}{unit}")
    canonical = format_size(value)
    assert parse_size(canonical) == value
    assert format_size(parse_size(canonical)) == canonical
