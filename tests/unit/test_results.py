"""From partial rows to window results (design.md sections 3 and 4).

Each shard stores its own partial row per (key, window); a result merges them. A window
is final only when it is closed on every shard that can still contribute to it.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.results import is_final, merge_rows
from processors.windowing.windows import Window
from tests.oracle import P99, distinct_within_bounds, exact_quantile, quantile_within_bounds
from tests.unit.merge_laws import fold

NAME = PAGE_VIEWS.name
STREAM = "clickstream"
MINUTE = 60_000
LATENESS = PAGE_VIEWS.allowed_lateness_ms
T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z
WINDOW = Window(T0, T0 + MINUTE)


P99_SKETCH = PAGE_VIEWS.aggregates[4].aggregator
USERS_SKETCH = PAGE_VIEWS.aggregates[5].aggregator


def page_view(
    ts: int,
    page: str,
    value: float | None = None,
    latency: float | None = None,
    user: str | None = None,
) -> bytes:
    event: dict[str, Any] = {"event_id": f"e{ts}", "ts": ts, "page": page}
    if value is not None:
        event["value"] = value
    if latency is not None:
        event["latency_ms"] = latency
    if user is not None:
        event["user_id"] = user
    return orjson.dumps(event)


def run_shard(store: MemoryPartialStore, shard: str, payloads: list[bytes]) -> None:
    """The shard's next records through an engine, made durable (rows, then progress)."""
    engine = ShardEngine(PAGE_VIEWS, store.register_shard(NAME, STREAM, shard))
    after = engine.durable.checkpoint.sequence if engine.durable.checkpoint else 0
    batch = [Record(shard, Position(after + i + 1), "pk", d) for i, d in enumerate(payloads)]
    engine.process(batch, lambda keys: store.load_rows(NAME, shard, keys))
    plan = engine.plan_flush()
    store.write_rows(plan.rows)
    if plan.progress is not None:
        store.write_progress(NAME, STREAM, plan.progress)
    engine.confirm_flush(plan)


def progress(shard: str, max_ts: int | None, ended: bool = False) -> ShardProgress:
    return ShardProgress(shard, max_event_time=max_ts, ended=ended)


# -- finality -------------------------------------------------------------------------------

END = WINDOW.end_ms


@pytest.mark.parametrize(
    ("shards", "final"),
    [
        pytest.param([], False, id="no shards: nothing is final"),
        pytest.param([progress("a", None)], False, id="a shard that has seen nothing"),
        pytest.param([progress("a", END + LATENESS - 1)], False, id="watermark 1 ms short"),
        pytest.param([progress("a", END + LATENESS)], True, id="watermark at the end"),
        pytest.param([progress("a", END + 5 * MINUTE)], True, id="watermark well past"),
        pytest.param(
            [progress("a", END + MINUTE), progress("b", END + LATENESS - 1)],
            False,
            id="one shard still open",
        ),
        pytest.param(
            [progress("a", END + MINUTE), progress("b", END + LATENESS)],
            True,
            id="all shards closed",
        ),
        pytest.param(
            [progress("a", END + MINUTE), progress("b", None)],
            False,
            id="a registered shard that has seen nothing holds it open",
        ),
        pytest.param(
            [progress("a", END + MINUTE), progress("parent", T0, ended=True)],
            True,
            id="an ended shard does not hold it open",
        ),
        pytest.param(
            [progress("a", END + MINUTE), progress("parent", None, ended=True)],
            True,
            id="an ended shard that saw nothing",
        ),
        pytest.param([progress("parent", T0, ended=True)], True, id="every shard ended"),
    ],
)
def test_a_window_is_final_when_closed_on_every_shard(
    shards: list[ShardProgress], final: bool
) -> None:
    assert is_final(WINDOW, shards, LATENESS) is final


# -- merging partial rows --------------------------------------------------------------------


def test_two_shards_merge_into_one_result_per_window() -> None:
    store = MemoryPartialStore()
    run_shard(
        store,
        "shard-1",
        [page_view(T0 + 1_000, "/a", 2.5, 40, "u1"), page_view(T0 + 2_000, "/b", None, 7)],
    )
    run_shard(
        store,
        "shard-2",
        [page_view(T0 + 3_000, "/a", 1.0, 12, "u1"), page_view(T0 + 61_000, "/a", 4.0, None)],
    )
    results = merge_rows(PAGE_VIEWS, store.read_rows(NAME), store.read_progress(NAME))

    assert [(r.key, r.window, r.shards) for r in results] == [
        ("/a", WINDOW, 2),
        ("/a", Window(T0 + MINUTE, T0 + 2 * MINUTE), 1),
        ("/b", WINDOW, 1),
    ]
    # p99 of [12, 40]: rank floor(0.99 * 1) = 0, so 12 (to the sketch's 1%); u1 viewed /a
    # on both shards and counts once.
    assert results[0].values == {
        "views": 2,
        "revenue": 3.5,
        "latency_min": 12,
        "latency_max": 40,
        "latency_p99": pytest.approx(12, rel=0.01),
        "unique_users": 1,
    }
    assert results[1].values == {
        "views": 1,
        "revenue": 4.0,
        "latency_min": None,
        "latency_max": None,
        "latency_p99": None,
        "unique_users": 0,
    }
    assert results[2].values == {
        "views": 1,
        "revenue": 0,
        "latency_min": 7,
        "latency_max": 7,
        "latency_p99": pytest.approx(7, rel=0.01),
        "unique_users": 0,
    }
    assert all(r.pipeline == NAME for r in results)
    # shard-1 only reached T0+2s: nothing is closed on it yet
    assert not any(r.final for r in results)


def test_results_become_final_as_every_shard_moves_past() -> None:
    store = MemoryPartialStore()
    run_shard(store, "shard-1", [page_view(T0 + 1_000, "/a"), page_view(T0 + 80_000, "/z")])
    run_shard(store, "shard-2", [page_view(T0 + 2_000, "/a"), page_view(T0 + 69_999, "/z")])
    first = merge_rows(PAGE_VIEWS, store.read_rows(NAME, key="/a"), store.read_progress(NAME))
    assert [r.final for r in first] == [False]  # shard-2's watermark is 1 ms short

    run_shard(store, "shard-2", [page_view(T0 + 70_000, "/z")])  # the next record
    shards = store.read_progress(NAME)
    assert [r.final for r in merge_rows(PAGE_VIEWS, store.read_rows(NAME, "/a"), shards)] == [True]


@st.composite
def events_on_two_shards(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[dict]]:
    """Events spread over a few windows, dealt to two shards; each shard receives its
    events in time order, so nothing is late and every event must be counted."""
    events = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "ts": st.integers(min_value=T0, max_value=T0 + 5 * MINUTE),
                    "page": st.sampled_from(["/a", "/b"]),
                    "value": st.one_of(st.none(), st.floats(min_value=0, max_value=1e5)),
                    "latency": st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)),
                    "user": st.one_of(st.none(), st.sampled_from([f"u{i}" for i in range(12)])),
                    "shard": st.sampled_from(["shard-1", "shard-2"]),
                }
            ),
            max_size=40,
        )
    )
    events.sort(key=lambda e: e["ts"])
    payloads = {
        shard: [
            page_view(e["ts"], e["page"], e["value"], e["latency"], e["user"])
            for e in events
            if e["shard"] == shard
        ]
        for shard in ("shard-1", "shard-2")
    }
    return payloads["shard-1"], payloads["shard-2"], events


@settings(max_examples=75, deadline=None)
@given(events_on_two_shards())
def test_merged_rows_equal_the_aggregate_of_all_events(
    split: tuple[list[bytes], list[bytes], list[dict]],
) -> None:
    one, two, events = split
    store = MemoryPartialStore()
    run_shard(store, "shard-1", one)
    run_shard(store, "shard-2", two)
    results = merge_rows(PAGE_VIEWS, store.read_rows(NAME), store.read_progress(NAME))

    expected: dict[tuple[str, int], list[dict]] = {}
    for e in events:
        expected.setdefault((e["page"], e["ts"] - e["ts"] % MINUTE), []).append(e)
    assert [(r.key, r.window.start_ms) for r in results] == sorted(expected)
    for result in results:
        group = expected[(result.key, result.window.start_ms)]
        latencies = [e["latency"] for e in group if e["latency"] is not None]
        assert result.values["views"] == len(group)
        assert math.isclose(
            result.values["revenue"],
            math.fsum(e["value"] for e in group if e["value"] is not None),
            rel_tol=1e-9,
            abs_tol=1e-9,
        )
        assert result.values["latency_min"] == (min(latencies) if latencies else None)
        assert result.values["latency_max"] == (max(latencies) if latencies else None)
        # The sketches merged from two shards are exactly the sketch of all events in one
        # pass, and within their documented error of the exact values.
        users = [e["user"] for e in group if e["user"] is not None]
        p99, distinct = result.values["latency_p99"], result.values["unique_users"]
        assert p99 == P99_SKETCH.result(fold(P99_SKETCH, latencies))
        assert distinct == USERS_SKETCH.result(fold(USERS_SKETCH, users))
        assert quantile_within_bounds(p99, exact_quantile(latencies, P99))
        assert distinct_within_bounds(distinct, len(set(users)))
        assert result.shards == len({e["shard"] for e in group})


def test_merge_rows_of_nothing_is_nothing() -> None:
    assert merge_rows(PAGE_VIEWS, [], []) == []


# -- query: merge on read ----------------------------------------------------------------------


def test_query_merges_on_read_and_filters_by_key_and_overlap() -> None:
    store = MemoryPartialStore()
    run_shard(
        store,
        "shard-1",
        [page_view(T0 + 1_000, "/a"), page_view(T0 + 61_000, "/a"), page_view(T0 + 1_000, "/b")],
    )
    run_shard(store, "shard-2", [page_view(T0 + 2_000, "/a"), page_view(T0 + 121_000, "/a")])

    everything = query_windows(store, PAGE_VIEWS)
    assert [(r.key, r.window.start_ms, r.values["views"]) for r in everything] == [
        ("/a", T0, 2),
        ("/a", T0 + MINUTE, 1),
        ("/a", T0 + 2 * MINUTE, 1),
        ("/b", T0, 1),
    ]
    only_b = query_windows(store, PAGE_VIEWS, key="/b")
    assert [r.key for r in only_b] == ["/b"]
    # [T0+59s, T0+60s) overlaps only the first window; until is exclusive
    narrow = query_windows(store, PAGE_VIEWS, "/a", since_ms=T0 + 59_000, until_ms=T0 + MINUTE)
    assert [r.window.start_ms for r in narrow] == [T0]
    # since inside the second window still finds it
    later = query_windows(store, PAGE_VIEWS, "/a", since_ms=T0 + MINUTE + 59_999)
    assert [r.window.start_ms for r in later] == [T0 + MINUTE, T0 + 2 * MINUTE]
