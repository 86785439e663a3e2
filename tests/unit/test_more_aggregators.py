"""Mean, First and Last: the same merge laws as every aggregator (associative,
commutative, initial is neutral, splitting a stream anywhere and merging the parts equals
adding everything in order), and stored forms that round-trip through JSON."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.windowing.aggregators import First, Last, Mean
from tests.unit.merge_laws import check_merge_laws, fold

_values = st.floats(-1e6, 1e6) | st.integers(-(10**6), 10**6)
_timed = st.tuples(st.integers(0, 50), st.text(max_size=3) | st.integers(0, 5) | st.none())


def same_mean(left: tuple[float, int], right: tuple[float, int]) -> bool:
    return left[1] == right[1] and math.isclose(left[0], right[0], rel_tol=1e-9, abs_tol=1e-6)


@given(st.lists(_values), st.lists(_values), st.lists(_values))
@settings(max_examples=150)
def test_mean_merge_laws(a: list[float], b: list[float], c: list[float]) -> None:
    check_merge_laws(Mean(), a, b, c, same=same_mean)


@pytest.mark.parametrize("aggregator", [First(), Last()], ids=["first", "last"])
@given(st.lists(_timed), st.lists(_timed), st.lists(_timed))
@settings(max_examples=150)
def test_first_and_last_merge_laws(
    aggregator: Any, a: list[Any], b: list[Any], c: list[Any]
) -> None:
    check_merge_laws(aggregator, a, b, c)


@given(st.permutations([(3, "c"), (1, "a"), (2, "b"), (1, "z")]))
def test_first_and_last_do_not_depend_on_arrival_order(events: list[tuple[int, str]]) -> None:
    assert First().result(fold(First(), events)) == "a"  # ts 1 twice: "a" < "z"
    assert Last().result(fold(Last(), events)) == "c"


def test_results_and_empty_states() -> None:
    assert Mean().result(fold(Mean(), [1, 2, 6])) == 3
    assert Mean().result(Mean().initial()) is None
    assert First().result(First().initial()) is None
    assert Last().result(fold(Last(), [(5, {"b": 1}), (9, [1, 2])])) == [1, 2]


@pytest.mark.parametrize(
    ("aggregator", "values"),
    [
        (Mean(), [1.5, 2, 1e300, 1e300]),  # the sum overflows to infinity and still round-trips
        (First(), [(7, {"k": [1, "x"]}), (3, "early")]),
        (Last(), [(7, None), (3, "early")]),
    ],
)
def test_stored_forms_round_trip_through_json(aggregator: Any, values: list[Any]) -> None:
    state = fold(aggregator, values)
    stored = orjson.loads(orjson.dumps(aggregator.to_stored(state)))
    assert aggregator.from_stored(stored) == state
