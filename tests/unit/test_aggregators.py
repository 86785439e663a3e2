"""The aggregator laws (design.md section 3).

Partial aggregates from shards, batches and restarts are merged in whatever grouping and
order they arrive, so for every aggregator: ``merge`` is associative and commutative,
``initial()`` is its identity, and adding values one by one equals adding two halves
separately and merging them. The stored form round trips, through JSON too.

Sums of floats are exact only up to rounding, so sums compare within 1e-9 of the sum of
the magnitudes involved (the standard bound for floating-point summation); everything
else compares exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.windowing.aggregators import Aggregator, Count, Max, Min, Sum

AGGREGATORS = [Count(), Sum(), Min(), Max()]
IDS = [aggregator.kind for aggregator in AGGREGATORS]

values = st.one_of(
    st.integers(min_value=-1_000_000, max_value=1_000_000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
value_lists = st.lists(values, max_size=30)


def fold(aggregator: Aggregator[Any], items: list[Any]) -> Any:
    return functools.reduce(aggregator.add, items, aggregator.initial())


def assert_same(aggregator: Aggregator[Any], left: Any, right: Any, magnitude: float) -> None:
    if isinstance(aggregator, Sum):
        assert math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, magnitude))
    else:
        assert left == right
        assert (left is None) == (right is None)


def magnitude(*lists: list[Any]) -> float:
    return sum(abs(v) for items in lists for v in items)


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=IDS)
@given(a=value_lists, b=value_lists, c=value_lists)
def test_merge_is_associative(aggregator: Aggregator[Any], a: list, b: list, c: list) -> None:
    x, y, z = fold(aggregator, a), fold(aggregator, b), fold(aggregator, c)
    assert_same(
        aggregator,
        aggregator.merge(aggregator.merge(x, y), z),
        aggregator.merge(x, aggregator.merge(y, z)),
        magnitude(a, b, c),
    )


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=IDS)
@given(a=value_lists, b=value_lists)
def test_merge_is_commutative(aggregator: Aggregator[Any], a: list, b: list) -> None:
    x, y = fold(aggregator, a), fold(aggregator, b)
    assert_same(aggregator, aggregator.merge(x, y), aggregator.merge(y, x), 0.0)


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=IDS)
@given(a=value_lists)
def test_initial_is_the_identity_of_merge(aggregator: Aggregator[Any], a: list) -> None:
    x = fold(aggregator, a)
    assert_same(aggregator, aggregator.merge(aggregator.initial(), x), x, 0.0)
    assert_same(aggregator, aggregator.merge(x, aggregator.initial()), x, 0.0)


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=IDS)
@given(items=value_lists, data=st.data())
def test_splitting_anywhere_and_merging_equals_adding_in_order(
    aggregator: Aggregator[Any], items: list, data: st.DataObject
) -> None:
    """What a restart or a second shard does to a window: two partial states merged."""
    cut = data.draw(st.integers(min_value=0, max_value=len(items)), label="cut")
    whole = fold(aggregator, items)
    parts = aggregator.merge(fold(aggregator, items[:cut]), fold(aggregator, items[cut:]))
    assert_same(aggregator, parts, whole, magnitude(items))


@pytest.mark.parametrize("aggregator", AGGREGATORS, ids=IDS)
@given(items=value_lists)
def test_stored_form_round_trips_through_json(aggregator: Aggregator[Any], items: list) -> None:
    state = fold(aggregator, items)
    stored = orjson.loads(orjson.dumps(aggregator.to_stored(state)))
    restored = aggregator.from_stored(stored)
    assert restored == state
    assert aggregator.result(restored) == aggregator.result(state)


@given(items=value_lists)
def test_results_mean_what_their_names_say(items: list) -> None:
    assert Count().result(fold(Count(), items)) == len(items)
    assert math.isclose(
        Sum().result(fold(Sum(), items)),
        math.fsum(items),
        rel_tol=1e-9,
        abs_tol=1e-9 * max(1.0, magnitude(items)),
    )
    assert Min().result(fold(Min(), items)) == (min(items) if items else None)
    assert Max().result(fold(Max(), items)) == (max(items) if items else None)


@pytest.mark.parametrize(
    ("aggregator", "empty"), [(Count(), 0), (Sum(), 0), (Min(), None), (Max(), None)], ids=IDS
)
def test_an_empty_window_has_a_neutral_result(aggregator: Aggregator[Any], empty: Any) -> None:
    """No events: zero views, zero revenue, and no latency rather than a made-up one."""
    assert aggregator.result(aggregator.initial()) == empty


def test_every_aggregator_has_a_kind_and_a_version() -> None:
    kinds = [aggregator.kind for aggregator in AGGREGATORS]
    assert len(set(kinds)) == len(kinds)
    assert all(isinstance(aggregator.version, int) for aggregator in AGGREGATORS)
