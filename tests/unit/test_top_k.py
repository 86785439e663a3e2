"""TopK, the heavy hitters: exact counts in a fixed order while the items fit in
``capacity``, where merges obey the laws every aggregator's do; beyond that the
Misra-Gries bound in any split and merge grouping; long items cut; stored forms that
round-trip, stay bounded and refuse garbage; and merges that leave their inputs alone."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec, Sinks
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.codec import decode_states, encode_states
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.top_k import TopK, TopKState
from tests.unit.merge_laws import check_merge_laws, fold

TOP3 = TopK(k=3, capacity=8)
TINY = TopK(k=3, capacity=5)  # reduces often: the bound must hold through every reduction

# --- exact counts and their order ------------------------------------------------------


def test_counts_are_exact_and_the_largest_come_first() -> None:
    state = fold(TOP3, ["e500", "e404", "e500", "e503", "e500", "e404", "e200"])
    assert TOP3.result(state) == [["e500", 3], ["e404", 2], ["e200", 1]]
    assert state.total == 7
    assert TOP3.error_bound(state) == 0


def test_equal_counts_are_ordered_by_item() -> None:
    top = TopK(k=2)
    assert top.result(fold(top, ["c", "b", "a", "c", "b", "a"])) == [["a", 2], ["b", 2]]
    assert top.result(fold(top, ["a", "b", "c", "c", "b", "a"])) == [["a", 2], ["b", 2]]


def test_fewer_items_than_k_and_no_items() -> None:
    assert TOP3.result(fold(TOP3, ["x"])) == [["x", 1]]
    assert TOP3.result(TOP3.initial()) == []


def test_other_values_count_as_their_text() -> None:
    top = TopK()
    assert top.result(fold(top, [7, "7", True, 1.5])) == [["7", 2], ["1.5", 1], ["True", 1]]


def test_long_items_are_cut_and_marked() -> None:
    top = TopK(max_item_chars=5)
    state = fold(top, ["abcdefgh", "abcdexyz", "abcde", "abcdef"])
    assert top.result(state) == [["abcde…", 3], ["abcde", 1]]


# --- exact merges while the items fit ------------------------------------------------------

_few = st.lists(st.sampled_from([f"item-{i}" for i in range(8)]), max_size=40)  # 8 = capacity


@given(_few, _few, _few)
@settings(max_examples=150)
def test_merges_are_exact_while_the_items_fit(a: list[str], b: list[str], c: list[str]) -> None:
    check_merge_laws(TOP3, a, b, c)
    state = fold(TOP3, a + b + c)
    assert state.counts == Counter(a + b + c)
    assert TOP3.error_bound(state) == 0


# --- the Misra-Gries bound beyond capacity --------------------------------------------------


def test_a_new_item_at_capacity_takes_one_from_every_counter() -> None:
    top = TopK(k=2, capacity=2)
    state = fold(top, ["a", "a", "b", "c"])  # c finds no room: a 2 -> 1, b 1 -> 0, c 1 -> 0
    assert state == TopKState({"a": 1}, total=4)
    assert top.error_bound(state) == 1  # (4 - 1) // 3: a's true count 2 is within it


def test_a_merge_beyond_capacity_subtracts_the_next_largest_count() -> None:
    top = TopK(k=2, capacity=2)
    merged = top.merge(TopKState({"a": 3, "b": 2}, 5), TopKState({"c": 1, "a": 2}, 3))
    assert merged == TopKState({"a": 4, "b": 1}, total=8)  # a 5, b 2, c 1: the third is 1
    assert top.error_bound(merged) == 1  # (8 - 5) // 3


_skewed = st.sampled_from(["hot", "warm"]) | st.integers(0, 30).map(lambda i: f"cold-{i}")


@given(st.lists(st.lists(_skewed, max_size=40), min_size=1, max_size=6), st.data())
@settings(max_examples=200)
def test_every_estimate_is_within_the_bound_in_any_grouping(
    parts: list[list[str]], data: st.DataObject
) -> None:
    """Split the stream anywhere, add each part, merge in any grouping and order."""
    states = [fold(TINY, part) for part in parts]
    while len(states) > 1:
        i = data.draw(st.integers(0, len(states) - 2), label="merge at")
        left, right = states[i], states[i + 1]
        if data.draw(st.booleans(), label="swap"):
            left, right = right, left
        states[i : i + 2] = [TINY.merge(left, right)]
        assert len(states[i].counts) <= TINY.capacity
    state = states[0]
    true = Counter(item for part in parts for item in part)
    total = sum(true.values())
    assert state.total == total
    assert len(state.counts) <= TINY.capacity
    slack = TINY.error_bound(state)
    assert slack <= total / (TINY.capacity + 1)
    for item in set(true) | set(state.counts):
        estimate = state.counts.get(item, 0)
        assert true[item] - slack <= estimate <= true[item], item


@given(st.lists(_skewed, max_size=300))
@settings(max_examples=100)
def test_adding_one_by_one_never_holds_more_than_capacity(items: list[str]) -> None:
    state = TINY.initial()
    for item in items:
        state = TINY.add(state, item)
        assert len(state.counts) <= TINY.capacity
    true = Counter(items)
    for item, count in true.items():
        assert count - len(items) / (TINY.capacity + 1) <= state.counts.get(item, 0) <= count


# --- stored forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "items",
    [[], ["a", "b", "a", 7, "x" * 300], [f"u{i % 13}" for i in range(500)]],
    ids=["empty", "exact", "reduced"],
)
def test_stored_forms_round_trip_through_json(items: list[Any]) -> None:
    state = fold(TINY, items)
    stored = orjson.loads(orjson.dumps(TINY.to_stored(state)))
    assert TINY.from_stored(stored) == state


def test_the_stored_form_does_not_depend_on_arrival_order() -> None:
    items = ["b", "a", "c", "a", "b", "a"]
    first, second = fold(TOP3, items), fold(TOP3, items[::-1])
    assert orjson.dumps(TOP3.to_stored(first)) == orjson.dumps(TOP3.to_stored(second))
    assert TOP3.to_stored(first)["counts"] == [["a", 3], ["b", 2], ["c", 1]]


@pytest.mark.parametrize("filler", ["x", "\U0001f600", "\x01"], ids=["ascii", "emoji", "escaped"])
def test_a_full_state_of_long_items_fits_a_dynamodb_item(filler: str) -> None:
    """The worst cases with the defaults: capacity counters, every item cut, 10-digit
    counts, characters of 1 byte, 4 bytes and 6 (a JSON escape)."""
    top = TopK()
    state = TopKState(
        {top.item(f"{i:04d}" + filler * 400): 1_000_000_000 + i for i in range(top.capacity)},
        total=10**13,
    )
    spec = AggregateSpec("top_items", top, lambda e: e)
    blob = encode_states([spec], [state])
    assert len(blob) <= top.capacity * (6 * top.max_item_chars + 30) < 110_000 < 400 * 1024 // 3
    assert decode_states([spec], blob) == [state]


_stored = TOP3.to_stored(fold(TOP3, ["a", "b", "a"]))


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        "top_k",
        {},
        {**_stored, "extra": 1},
        {key: value for key, value in _stored.items() if key != "total"},
        {**_stored, "total": -1},
        {**_stored, "total": "3"},
        {**_stored, "total": True},
        {**_stored, "total": 2},  # less than the counts add up to
        {**_stored, "counts": {"a": 2}},
        {**_stored, "counts": [["a"]]},
        {**_stored, "counts": [["a", 2, 0]]},
        {**_stored, "counts": [("a", 2)]},
        {**_stored, "counts": [[1, 2]]},
        {**_stored, "counts": [["a", 0]]},
        {**_stored, "counts": [["a", 1.5]]},
        {**_stored, "counts": [["a", 1], ["a", 1]]},
        {**_stored, "counts": [["x" * 300, 1]]},
        {**_stored, "total": 20, "counts": [[f"i{i}", 1] for i in range(9)]},  # over capacity
        {**_stored, "capacity": 9},
        {**_stored, "max_item_chars": 100},
    ],
)
def test_malformed_stored_states_are_refused(garbage: Any) -> None:
    with pytest.raises(ValueError, match="top_k"):
        TOP3.from_stored(garbage)


# --- inputs, parameters, rows -------------------------------------------------------------


@pytest.mark.parametrize("aggregator", [TOP3, TopK(k=1, capacity=1)], ids=["exact", "reducing"])
def test_merge_does_not_change_its_inputs(aggregator: TopK) -> None:
    left, right = fold(aggregator, ["a", "a", "b"]), fold(aggregator, ["c", "b", "d"])
    before = copy.deepcopy((left, right))
    aggregator.merge(left, right)
    aggregator.merge(right, left)
    assert (left, right) == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"k": 0}, "k must be at least 1"),
        ({"k": 5, "capacity": 4}, "capacity must be at least k"),
        ({"max_item_chars": 0}, "max_item_chars must be at least 1"),
    ],
)
def test_bad_parameters_are_refused(arguments: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopK(**arguments)
    with pytest.raises(TypeError, match="capacity must be an int"):
        TopK(capacity=10.0)  # type: ignore[arg-type]


def test_every_row_counts_its_own_items() -> None:
    pipeline = replace(
        PAGE_VIEWS,
        name="top-users",
        aggregates=(AggregateSpec("users", TopK(k=2), lambda e: e.user_id),),
        sinks=Sinks(),  # page-views' alert rule names an aggregate this copy lacks
    )
    engine = ShardEngine(pipeline, ShardProgress("s0"))
    events = [("/a", "u1"), ("/b", "u2"), ("/b", "u3"), ("/b", "u2")]
    data = [
        orjson.dumps({"event_id": str(i), "ts": 1_000 + i, "page": page, "user_id": user})
        for i, (page, user) in enumerate(events)
    ]
    engine.process(
        [Record("s0", Position(i + 1), "pk", d) for i, d in enumerate(data)], lambda keys: []
    )
    tops = {key: TopK(k=2).result(row.states[0]) for key, row in engine.snapshot().items()}
    assert tops == {("/a", 0): [["u1", 1]], ("/b", 0): [["u2", 2], ["u3", 1]]}
