"""Extents against a plain Python set of frames."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from luod.kernel_model.extents import Extents

ranges = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=12)


def build(rs: list[tuple[int, int]]) -> Extents:
    return Extents.from_ranges([s for s, _ in rs], [s + n for s, n in rs])


def frames(rs: list[tuple[int, int]]) -> set[int]:
    return {f for s, n in rs for f in range(s, s + n)}


def as_set(e: Extents) -> set[int]:
    return {f for s, t in e for f in range(s, t)}


@given(ranges, ranges)
def test_algebra_matches_sets(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    ea, eb = build(a), build(b)
    assert as_set(ea) == frames(a)
    assert as_set(ea | eb) == frames(a) | frames(b)
    assert as_set(ea & eb) == frames(a) & frames(b)
    assert as_set(ea - eb) == frames(a) - frames(b)
    assert ea.total() == len(frames(a))


@given(ranges)
def test_normalised_form(a: list[tuple[int, int]]) -> None:
    e = build(a)
    # sorted, non-empty, and neither overlapping nor adjacent
    assert (e.ends > e.starts).all()
    assert (e.starts[1:] > e.ends[:-1]).all()


@given(ranges, st.lists(st.integers(0, 260), max_size=20))
def test_contains(a: list[tuple[int, int]], points: list[int]) -> None:
    e = build(a)
    assert e.contains(np.array(points, dtype=np.int64)).tolist() == [p in frames(a) for p in points]


@given(ranges, st.lists(st.tuples(st.integers(0, 250), st.integers(1, 30)), max_size=10))
def test_overlaps_and_covers(a: list[tuple[int, int]], qs: list[tuple[int, int]]) -> None:
    e, fa = build(a), frames(a)
    hits = e.overlaps_ranges([s for s, _ in qs], [s + n for s, n in qs])
    assert hits.tolist() == [bool(fa & set(range(s, s + n))) for s, n in qs]
    for s, n in qs:
        assert e.covers(s, s + n) == set(range(s, s + n)).issubset(fa)


@given(ranges, ranges)
def test_meets_sorted_finds_the_first_overlapping_range(
    a: list[tuple[int, int]], q: list[tuple[int, int]]
) -> None:
    e, fa = build(a), frames(a)
    queries = build(q)  # sorted and disjoint, as meets_sorted requires
    first = next(
        (i for i, (s, t) in enumerate(queries) if fa & set(range(s, t))),
        None,
    )
    assert e.meets_sorted(queries.starts, queries.ends) == first


big_ranges = st.lists(
    st.tuples(st.integers(0, 3000), st.integers(0, 12)), min_size=60, max_size=160
)


@given(st.one_of(ranges, big_ranges), st.one_of(ranges, big_ranges))
def test_every_algebra_path_matches_sets(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    """Small sets take clipping paths, large ones the sweep: all must agree with sets."""
    from luod.kernel_model.extents import _sweep

    ea, eb = build(a), build(b)
    fa, fb = frames(a), frames(b)
    for op, expected in (("or", fa | fb), ("and", fa & fb), ("sub", fa - fb)):
        if ea and eb:
            assert as_set(_sweep(ea, eb, op)) == expected  # type: ignore[arg-type]
    assert as_set(ea | eb) == fa | fb
    assert as_set(ea & eb) == fa & fb
    assert as_set(ea - eb) == fa - fb
    assert as_set(eb - ea) == fb - fa


@given(ranges, st.integers(0, 260), st.integers(0, 40))
def test_meets_is_a_shared_frame(a: list[tuple[int, int]], start: int, n: int) -> None:
    assert build(a).meets(start, start + n) == bool(frames(a) & set(range(start, start + n)))
