"""Session windows: events of a key less than a gap apart form one session, which spans
``[first event, last event + gap)``. The engine stores gap-long buckets per shard; reading
chains them into sessions. The story: the bucket arithmetic, sessions against an
independent computation whatever the sharding, order and restarts, bridging, lateness,
finality, and queries that return whole sessions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec, Pipeline
from processors.query import query_windows
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.aggregators import Count, First, Last, Sum
from processors.windowing.engine import REASON_LATE, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.results import WindowResult, merge_rows
from processors.windowing.windows import SessionWindows, Window
from schemas.errors import InvalidEvent

GAP = 10
STREAM = "stream"


def decode(data: bytes) -> dict[str, Any]:
    event = orjson.loads(data)
    if not isinstance(event, dict) or "ts" not in event:
        raise InvalidEvent("an event needs ts")
    return event


def sessions_pipeline(lateness: int = 1_000_000) -> Pipeline[dict[str, Any]]:
    return Pipeline(
        name="sessions",
        description="test sessions",
        decode=decode,
        key=itemgetter("k"),
        event_time=itemgetter("ts"),
        windows=SessionWindows(GAP),
        allowed_lateness_ms=lateness,
        aggregates=(
            AggregateSpec("events", Count()),
            AggregateSpec("total", Sum(), itemgetter("v")),
            AggregateSpec("first_v", First(), lambda e: (e["ts"], e["v"])),
            AggregateSpec("last_v", Last(), lambda e: (e["ts"], e["v"])),
        ),
        max_future_ms=None,
    )


Event = tuple[str, int, int]  # (key, ts, value)


def encode(event: Event) -> bytes:
    key, ts, value = event
    return orjson.dumps({"k": key, "ts": ts, "v": value})


def by_time_then_json(point: tuple[int, int]) -> tuple[int, bytes]:
    return (point[0], orjson.dumps(point[1]))


def independent_sessions(events: Sequence[Event]) -> list[tuple[str, Window, dict[str, Any]]]:
    """Sessions the textbook way: sort a key's events, cut where consecutive events are a
    gap or more apart."""
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, ts, value in events:
        by_key[key].append((ts, value))
    out = []
    for key in sorted(by_key):
        points = sorted(by_key[key])
        runs: list[list[tuple[int, int]]] = [[points[0]]]
        for point in points[1:]:
            if point[0] - runs[-1][-1][0] >= GAP:
                runs.append([point])
            else:
                runs[-1].append(point)
        for run in runs:
            values = {
                "events": len(run),
                "total": sum(v for _, v in run),
                # Equal times: First and Last order values by their canonical JSON.
                "first_v": min(run, key=by_time_then_json)[1],
                "last_v": max(run, key=by_time_then_json)[1],
            }
            out.append((key, Window(run[0][0], run[-1][0] + GAP), values))
    return out


def as_tuples(results: Sequence[WindowResult]) -> list[tuple[str, Window, dict[str, Any]]]:
    return [(r.key, r.window, r.values) for r in results]


def run_shard(
    pipeline: Pipeline[Any],
    store: MemoryPartialStore,
    shard: str,
    events: Sequence[Event],
    restarts: Sequence[int] = (),
) -> list[Any]:
    """Process ``events`` in order on ``shard``, flushing, forgetting everything and
    restarting from storage after each index in ``restarts``. Returns the dead letters."""
    records = [
        Record(shard, Position(seq), "pk", encode(event)) for seq, event in enumerate(events, 1)
    ]
    letters: list[Any] = []
    engine = ShardEngine(pipeline, store.register_shard(pipeline.name, STREAM, shard))
    cursor = 0
    for stop in [*sorted(restarts), len(records)]:
        engine.process(
            records[cursor:stop], lambda keys: store.load_rows(pipeline.name, shard, keys)
        )
        cursor = max(cursor, stop)
        plan = engine.plan_flush()
        letters.extend(plan.dead_letters)
        if plan.intent is not None:
            store.write_intent(pipeline.name, STREAM, plan.intent)
        store.write_rows(plan.rows)
        if plan.progress is not None:
            store.write_progress(pipeline.name, STREAM, plan.progress)
        engine.confirm_flush(plan)
        engine = ShardEngine(pipeline, store.register_shard(pipeline.name, STREAM, shard))
    return letters


# -- buckets ------------------------------------------------------------------------------


def test_an_event_falls_in_the_gap_long_bucket_that_holds_it() -> None:
    windows = SessionWindows(GAP)
    assert windows.assign(25) == (Window(20, 30),)
    assert windows.assign(20) == (Window(20, 30),)
    assert windows.size_ms == GAP
    assert windows.window_starting(20) == Window(20, 30)


@pytest.mark.parametrize(("last", "closes"), [(25, 40), (20, 30), (29, 40), (30, 40)])
def test_a_session_can_grow_until_the_bucket_of_its_last_joinable_instant_closes(
    last: int, closes: int
) -> None:
    # An event joins while it is less than a gap after the last one: up to last + gap - 1.
    assert SessionWindows(GAP).closes_at(last) == closes


@pytest.mark.parametrize("gap", [0, -5])
def test_a_gap_must_be_positive(gap: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SessionWindows(gap)


def test_session_bound_names_are_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Pipeline(
            name="x",
            description="",
            decode=decode,
            key=itemgetter("k"),
            event_time=itemgetter("ts"),
            windows=SessionWindows(GAP),
            allowed_lateness_ms=0,
            aggregates=(AggregateSpec("_session_first_ms", Count()),),
        )


# -- sessions -----------------------------------------------------------------------------


def test_events_less_than_a_gap_apart_share_a_session() -> None:
    pipeline = sessions_pipeline()
    store = MemoryPartialStore()
    events = [("a", 0, 1), ("a", 9, 2), ("a", 18, 3), ("a", 28, 4), ("b", 5, 10)]
    run_shard(pipeline, store, "s0", events)
    results = query_windows(store, pipeline)
    # 18 -> 28 is exactly a gap: a new session.
    assert as_tuples(results) == [
        ("a", Window(0, 28), {"events": 3, "total": 6, "first_v": 1, "last_v": 3}),
        ("a", Window(28, 38), {"events": 1, "total": 4, "first_v": 4, "last_v": 4}),
        ("b", Window(5, 15), {"events": 1, "total": 10, "first_v": 10, "last_v": 10}),
    ]


def test_an_event_that_bridges_two_sessions_merges_them_and_their_aggregates() -> None:
    pipeline = sessions_pipeline()
    store = MemoryPartialStore()
    run_shard(pipeline, store, "s0", [("a", 0, 1), ("a", 15, 2)])
    assert [r.window for r in query_windows(store, pipeline)] == [Window(0, 10), Window(15, 25)]
    # Another shard sees an event at 8: within a gap of both.
    run_shard(pipeline, store, "s1", [("a", 8, 5)])
    (merged,) = query_windows(store, pipeline)
    assert merged.window == Window(0, 25)
    assert merged.values == {"events": 3, "total": 8, "first_v": 1, "last_v": 2}
    assert merged.shards == 2


keys = st.sampled_from(["a", "b", "c"])
events_strategy = st.lists(
    st.tuples(keys, st.integers(0, 300), st.integers(-5, 5)), min_size=1, max_size=60
)


@given(events=events_strategy, data=st.data())
@settings(max_examples=300, deadline=None)
def test_sessions_match_an_independent_computation_whatever_the_sharding_order_and_restarts(
    events: list[Event], data: st.DataObject
) -> None:
    pipeline = sessions_pipeline()
    store = MemoryPartialStore()
    shards = data.draw(st.integers(1, 3), label="shards")
    placed: dict[int, list[Event]] = defaultdict(list)
    for event in data.draw(st.permutations(events), label="order"):
        placed[data.draw(st.integers(0, shards - 1), label="shard")].append(event)
    for shard, shard_events in placed.items():
        restarts = data.draw(
            st.lists(st.integers(0, len(shard_events)), max_size=3), label="restarts"
        )
        run_shard(pipeline, store, f"s{shard}", shard_events, restarts)
    assert as_tuples(query_windows(store, pipeline)) == independent_sessions(events)


@given(events=events_strategy, lateness=st.integers(0, 40), data=st.data())
@settings(max_examples=200, deadline=None)
def test_what_is_not_late_is_sessionized_and_what_is_late_is_dead_lettered(
    events: list[Event], lateness: int, data: st.DataObject
) -> None:
    """With a small lateness some events are late; the sessions are then exactly those of
    the events that were not, and every event is in exactly one of the two."""
    pipeline = sessions_pipeline(lateness)
    store = MemoryPartialStore()
    restarts = data.draw(st.lists(st.integers(0, len(events)), max_size=3), label="restarts")
    letters = run_shard(pipeline, store, "s0", events, restarts)
    late = [orjson.loads(letter.record.data) for letter in letters]
    assert all(letter.reason == REASON_LATE for letter in letters)
    late_events = [(e["k"], e["ts"], e["v"]) for e in late]
    kept = list(events)
    for event in late_events:
        kept.remove(event)
    expected = independent_sessions(kept) if kept else []
    assert as_tuples(query_windows(store, pipeline)) == expected


def test_an_event_whose_bucket_closed_is_late() -> None:
    pipeline = sessions_pipeline(lateness=5)
    store = MemoryPartialStore()
    letters = run_shard(pipeline, store, "s0", [("a", 0, 1), ("a", 40, 1), ("a", 29, 1)])
    # watermark 35: the bucket [20, 30) is closed, so the event at 29 is late, though
    # a session starting at 29 would still be open until 39.
    assert [orjson.loads(letter.record.data)["ts"] for letter in letters] == [29]


# -- finality -----------------------------------------------------------------------------


def progress(shard: str, max_ts: int) -> ShardProgress:
    return ShardProgress(shard, Position(1), max_event_time=max_ts)


def test_a_session_is_final_once_no_shard_can_still_extend_it() -> None:
    pipeline = sessions_pipeline(lateness=0)
    store = MemoryPartialStore()
    run_shard(pipeline, store, "s0", [("a", 12, 1), ("a", 21, 1)])
    rows = store.read_rows(pipeline.name)
    # The session [12, 31) can take an event up to 30, whose bucket [30, 40) closes at 40.
    (open_,) = merge_rows(pipeline, rows, [progress("s0", 39), progress("s1", 100)])
    assert open_.window == Window(12, 31)
    assert not open_.final
    (still_open,) = merge_rows(pipeline, rows, [progress("s0", 40), progress("s1", 39)])
    assert not still_open.final
    (final,) = merge_rows(pipeline, rows, [progress("s0", 40), progress("s1", 40)])
    assert final.final


# -- queries ------------------------------------------------------------------------------


def test_a_query_returns_whole_sessions_however_far_they_reach_past_its_range() -> None:
    pipeline = sessions_pipeline()
    store = MemoryPartialStore()
    long_session = [("a", ts, 1) for ts in range(0, 2_000, 7)]  # one session, 286 events
    run_shard(pipeline, store, "s0", [*long_session, ("a", 3_000, 1), ("b", 1_000, 1)])
    (whole,) = query_windows(store, pipeline, key="a", since_ms=1_000, until_ms=1_001)
    assert whole.window == Window(0, 1_995 + GAP)
    assert whole.values["events"] == len(long_session)
    later = query_windows(store, pipeline, key="a", since_ms=2_005, until_ms=5_000)
    assert [r.window for r in later] == [Window(3_000, 3_010)]
    # Without a key: every key's sessions overlapping the range.
    assert [(r.key, r.window) for r in query_windows(store, pipeline, None, 1_000, 1_001)] == [
        ("a", Window(0, 2_005)),
        ("b", Window(1_000, 1_010)),
    ]
