"""The stored form of a row's states: versioned JSON that refuses to be misread.

A row written by one pipeline definition must never be silently continued by another
(a renamed or removed aggregate, a different aggregator kind or version): decoding raises
:class:`IncompatibleState` instead. The one change old rows survive is an added aggregate:
they hold none of it, so it reads as its initial state.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.aggregators import Count, Max, Min
from processors.windowing.codec import (
    FORMAT_VERSION,
    IncompatibleState,
    decode_states,
    encode_states,
)
from processors.windowing.sketches import ApproxDistinct
from tests.unit.merge_laws import fold

# views, revenue, latency_min, latency_max, latency_p99, unique_users
SPECS = PAGE_VIEWS.aggregates
P99, USERS = SPECS[4].aggregator, SPECS[5].aggregator

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
latency = finite.filter(lambda x: x >= 0)
page_view_states = st.tuples(
    st.integers(min_value=0, max_value=2**53),
    st.one_of(st.integers(min_value=-(2**53), max_value=2**53), finite),
    st.one_of(st.none(), latency),
    st.one_of(st.none(), latency),
    st.lists(latency, max_size=30).map(lambda values: fold(P99, values)),
    st.lists(st.text(max_size=6), max_size=40).map(lambda users: fold(USERS, users)),
)


def _states(views: int, revenue: float, low: Any, high: Any) -> list[Any]:
    """A page-views row's six states, the sketches fed with a few latencies and users."""
    return [views, revenue, low, high, fold(P99, [low or 0, high or 0]), fold(USERS, ["u1"])]


@given(page_view_states)
def test_states_round_trip(states: tuple[Any, ...]) -> None:
    assert decode_states(SPECS, encode_states(SPECS, states)) == list(states)


def test_states_are_matched_by_name_not_position() -> None:
    states = _states(3, 12.25, 1.5, 7.5)
    blob = encode_states(tuple(reversed(SPECS)), list(reversed(states)))
    assert decode_states(SPECS, blob) == states


def test_the_blob_is_versioned_json() -> None:
    document = orjson.loads(encode_states(SPECS, _states(3, 12.5, 1.0, 9.0)))
    assert document["format"] == FORMAT_VERSION
    assert document["aggregates"]["views"] == ["count", 1, 3]
    assert document["aggregates"]["revenue"] == ["sum", 1, 12.5]
    kind, version, p99 = document["aggregates"]["latency_p99"]
    assert (kind, version, p99["accuracy"], p99["zero"]) == ("quantile", 1, 0.01, 0)
    assert sum(count for _, count in p99["pos"]) == 2
    kind, version, users = document["aggregates"]["unique_users"]
    assert (kind, version, users["p"], len(users["sparse"])) == ("distinct", 1, 12, 1)


def test_state_count_must_match_specs() -> None:
    with pytest.raises(ValueError):
        encode_states(SPECS, [1, 2])


def _renamed(name: str) -> tuple[AggregateSpec[Any], ...]:
    return tuple(
        AggregateSpec(name, s.aggregator, s.value) if s.name == "views" else s for s in SPECS
    )


class _CountV2(Count):
    version = 2


@pytest.mark.parametrize(
    ("reader_specs", "message"),
    [
        pytest.param(SPECS[:3], "differ", id="aggregate removed"),
        pytest.param(_renamed("page_views"), "differ", id="aggregate renamed"),
        pytest.param(
            (SPECS[0], AggregateSpec("revenue", Max()), *SPECS[2:]),
            "stored as sum v1",
            id="kind changed",
        ),
        pytest.param(
            (AggregateSpec("views", _CountV2()), *SPECS[1:]), "count v2", id="version changed"
        ),
    ],
)
def test_a_changed_pipeline_definition_cannot_read_old_rows(
    reader_specs: tuple[AggregateSpec[Any], ...], message: str
) -> None:
    blob = encode_states(SPECS, _states(1, 2.0, 3.0, 4.0))
    with pytest.raises(IncompatibleState, match=message):
        decode_states(reader_specs, blob)


def test_an_aggregate_added_later_reads_from_old_rows_as_its_initial_state() -> None:
    """page-views gained latency_p99 and unique_users: rows stored before still read."""
    old = SPECS[:4]
    blob = encode_states(old, [7, 2.5, 1.0, 9.0])
    states = decode_states(SPECS, blob)
    assert states[:4] == [7, 2.5, 1.0, 9.0]
    assert [spec.aggregator.result(s) for spec, s in zip(SPECS[4:], states[4:], strict=True)] == [
        None,
        0,
    ]


@pytest.mark.parametrize("fmt", [None, 0, FORMAT_VERSION + 1, "1"])
def test_an_unknown_format_is_refused(fmt: object) -> None:
    blob = orjson.dumps({"format": fmt, "aggregates": {}})
    with pytest.raises(IncompatibleState, match="format"):
        decode_states(SPECS, blob)


def test_incompatible_state_is_a_value_error() -> None:
    assert issubclass(IncompatibleState, ValueError)


# -- numbers plain JSON cannot hold ------------------------------------------------------
# page-views accepts any JSON number as ``value``. Integer sums stay exact beyond 64 bits,
# and floats near 1e308 can sum to inf (and inf + -inf to nan); orjson can write none of
# these (it refuses big integers and writes inf as null), so the stored form tags them.


@pytest.mark.parametrize(
    "revenue",
    [2**63, -(2**63) - 1, 2 * 10**19, 10**40, math.inf, -math.inf],
    ids=["2**63", "-2**63-1", "2e19 int", "1e40 int", "inf", "-inf"],
)
def test_sums_beyond_json_numbers_round_trip(revenue: float) -> None:
    states = [2, revenue, None, None, P99.initial(), USERS.initial()]
    restored = decode_states(SPECS, encode_states(SPECS, states))
    assert restored == states
    assert type(restored[1]) is type(revenue)


def test_a_nan_sum_round_trips() -> None:
    """Merging an inf partial with a -inf one gives nan; it must not become null."""
    (restored,) = decode_states(SPECS[1:2], encode_states(SPECS[1:2], [math.nan]))
    assert math.isnan(restored)


def test_min_and_max_keep_none_for_windows_without_values() -> None:
    specs = (AggregateSpec("low", Min()), AggregateSpec("high", Max()))
    assert decode_states(specs, encode_states(specs, [None, None])) == [None, None]


def test_a_sketch_stored_with_other_settings_is_an_incompatible_state() -> None:
    """Changing a sketch's precision under the same pipeline name is a definition change,
    reported like one (the command line prints it as one line), not a crash."""
    written = [AggregateSpec("users", ApproxDistinct(precision=12), lambda e: e)]
    read = [AggregateSpec("users", ApproxDistinct(precision=14), lambda e: e)]
    blob = encode_states(written, [ApproxDistinct(precision=12).initial()])
    with pytest.raises(IncompatibleState, match="'users' cannot read its stored state"):
        decode_states(read, blob)
