"""The approximate aggregators: merges are exact (any grouping, any order gives the same
state), estimates stay within the stated error, stored forms round-trip through JSON, and
every row gets a sketch of its own."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec, Sinks
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.sketches import ApproxDistinct, ApproxQuantile
from tests.unit.merge_laws import check_merge_laws, fold

P99 = ApproxQuantile(0.99)
SMALL = ApproxQuantile(0.5, max_buckets=8)  # folds often: the fold must merge exactly too
DISTINCT = ApproxDistinct(precision=8)

_values = st.lists(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000), max_size=40)
_items = st.lists(st.text(max_size=4) | st.integers(0, 300), max_size=60)


@pytest.mark.parametrize("sketch", [P99, SMALL], ids=["p99", "folding"])
@given(_values, _values, _values)
@settings(max_examples=120)
def test_quantile_merges_are_exact(
    sketch: ApproxQuantile, a: list[Any], b: list[Any], c: list[Any]
) -> None:
    check_merge_laws(sketch, a, b, c)


@given(_items, _items, _items)
@settings(max_examples=120)
def test_distinct_merges_are_exact(a: list[Any], b: list[Any], c: list[Any]) -> None:
    check_merge_laws(DISTINCT, a, b, c)


def test_merge_does_not_change_its_inputs() -> None:
    x, y = fold(P99, [1.0, 2.0]), fold(P99, [3.0])
    before = orjson.dumps(P99.to_stored(x))
    P99.merge(x, y)
    assert orjson.dumps(P99.to_stored(x)) == before
    left = fold(DISTINCT, ["a"])
    DISTINCT.merge(left, fold(DISTINCT, ["b"]))
    assert DISTINCT.result(left) == 1


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_quantiles_are_within_the_relative_accuracy(q: float) -> None:
    rng = random.Random(q)
    values = [rng.lognormvariate(4.5, 0.8) for _ in range(20_000)]
    sketch = ApproxQuantile(q, relative_accuracy=0.01)
    estimate = sketch.result(fold(sketch, values))
    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    assert estimate is not None
    assert abs(estimate - exact) <= 0.01 * exact + 1e-9


def test_quantile_of_mixed_signs_and_zero() -> None:
    median = ApproxQuantile(0.5)
    assert median.result(fold(median, [-5, 0, 0, 7, -3])) == 0.0
    assert median.result(median.initial()) is None
    low = ApproxQuantile(0.0)
    assert math.isclose(low.result(fold(low, [-5, 0, 7])), -5, rel_tol=0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("true_count", [0, 1, 10, 100, 1_000, 20_000, 200_000])
def test_distinct_counts_are_within_a_few_standard_errors(true_count: int) -> None:
    sketch = ApproxDistinct()  # 4,096 registers: 1.6% standard error
    state = fold(sketch, [f"user-{i}" for i in range(true_count)] * 2)
    estimate = sketch.result(state)
    assert abs(estimate - true_count) <= max(1, 0.05 * true_count)


def test_distinct_hash_is_stable_across_processes() -> None:
    """Python's hash() changes per process; a stored sketch must mean the same later."""
    code = (
        "from processors.windowing.sketches import ApproxDistinct as D\n"
        "d = D(precision=4); s = d.initial()\n"
        "for v in ['a', 'b', 7]: d.add(s, v)\n"
        "print(bytes(s).hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert outputs == {"00000000050000000200000000000200"}


@pytest.mark.parametrize(
    ("sketch", "values"),
    [
        (P99, [1.5, -2.0, 0, 1e9, 3e-12]),
        (ApproxDistinct(), [f"u{i}" for i in range(50)]),  # sparse
        (ApproxDistinct(), [f"u{i}" for i in range(5_000)]),  # dense
    ],
)
def test_stored_forms_round_trip_through_json(sketch: Any, values: list[Any]) -> None:
    state = fold(sketch, values)
    stored = orjson.loads(orjson.dumps(sketch.to_stored(state)))
    assert sketch.from_stored(stored) == state


def test_a_stored_sketch_with_other_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        ApproxQuantile(0.5, 0.02).from_stored(P99.to_stored(P99.initial()))
    with pytest.raises(ValueError, match="precision"):
        ApproxDistinct(10).from_stored(ApproxDistinct(12).to_stored(ApproxDistinct(12).initial()))


def test_every_row_gets_a_sketch_of_its_own() -> None:
    pipeline = replace(
        PAGE_VIEWS,
        name="sketchy",
        aggregates=(AggregateSpec("users", ApproxDistinct(), lambda e: e.user_id),),
        sinks=Sinks(),  # page-views' alert rule names an aggregate this copy lacks
    )
    engine = ShardEngine(pipeline, ShardProgress("s0"))
    data = [
        orjson.dumps({"event_id": "1", "ts": 1_000, "page": "/a", "user_id": "u1"}),
        orjson.dumps({"event_id": "2", "ts": 2_000, "page": "/b", "user_id": "u2"}),
        orjson.dumps({"event_id": "3", "ts": 3_000, "page": "/b", "user_id": "u3"}),
    ]
    engine.process(
        [Record("s0", Position(i + 1), "pk", d) for i, d in enumerate(data)], lambda keys: []
    )
    counts = {key: ApproxDistinct().result(row.states[0]) for key, row in engine.snapshot().items()}
    assert counts == {("/a", 0): 1, ("/b", 0): 2}


@given(st.lists(st.integers(0, 40), max_size=4_096 // 4))
def test_the_stored_distinct_sketch_lists_exactly_the_set_registers(ranks: list[int]) -> None:
    """Sparse while under an eighth of the registers are set, dense otherwise; either way
    it round-trips, and the sparse form lists every set register in order."""
    sketch = ApproxDistinct()
    state = bytearray(4_096)
    state[: len(ranks)] = bytes(ranks)
    stored = sketch.to_stored(state)
    expected = [(index, rank) for index, rank in enumerate(state) if rank]
    if len(expected) * 8 < 4_096:
        assert stored["sparse"] == expected
    else:
        assert "dense" in stored
    assert sketch.from_stored(orjson.loads(orjson.dumps(stored))) == state


@settings(max_examples=300, deadline=None)
@given(
    precision=st.sampled_from([4, 6, 12]),
    ranks=st.lists(st.integers(0, 53), min_size=0, max_size=300),
    data=st.data(),
)
def test_the_distinct_estimate_is_the_textbook_formula_over_every_register(
    precision: int, ranks: list[int], data: st.DataObject
) -> None:
    """result() sums the registers by rank (a count in C per rank); the estimate is the
    HyperLogLog formula over every register, with the harmonic sum exactly rounded."""
    sketch = ApproxDistinct(precision)
    m = 1 << precision
    state = bytearray(m)
    for rank in ranks:
        state[data.draw(st.integers(0, m - 1))] = rank
    empty = state.count(0)
    if empty == m:
        expected = 0
    else:
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / math.fsum(2.0**-register for register in state)
        if estimate <= 2.5 * m and empty:
            estimate = m * math.log(m / empty)
        expected = round(estimate)
    assert sketch.result(state) == expected
