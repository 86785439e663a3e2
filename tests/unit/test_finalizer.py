"""Final rows (processors/finalizer.py, processors/windowing/finals.py).

The story: shards write partial rows as they go; whenever the finalizer runs, every window
that became final gets one final row, equal to the merge of its partial rows across
shards, written once however often (and however late) the finalizer runs, for tumbling,
hopping and session windows alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import processors.finalizer as finalizer_module
from processors.alerts import AlertDeliveryError, rule
from processors.direct_load import StoreLoader
from processors.finalizer import PARTIAL_RETENTION_S, Finalizer
from processors.pipeline import AggregateSpec, Pipeline, Sinks
from processors.query import query_windows
from processors.sinks.memory import MemoryAlertSink, MemoryFinalStore
from processors.windowing.aggregators import Count, Sum
from processors.windowing.codec import StateCodec
from processors.windowing.finals import first_open_start
from processors.windowing.results import merge_rows
from processors.windowing.windows import (
    HoppingWindows,
    SessionWindows,
    TumblingWindows,
    Window,
    Windows,
)

STREAM = "stream"
NOW_S = 2_000_000_000


def decode(data: bytes) -> dict[str, Any]:
    event: dict[str, Any] = orjson.loads(data)
    return event


def pipeline(windows: Windows, lateness: int = 5, **sinks: Any) -> Pipeline[dict[str, Any]]:
    return Pipeline(
        name="finals-test",
        description="counts and sums",
        decode=decode,
        key=lambda e: str(e["k"]),
        event_time=lambda e: int(e["ts"]),
        windows=windows,
        allowed_lateness_ms=lateness,
        aggregates=(
            AggregateSpec("n", Count()),
            AggregateSpec("total", Sum(), lambda e: e["v"]),
        ),
        idle_timeout_ms=None,
        max_future_ms=None,
        sinks=Sinks(**sinks),
    )


class Shards(StoreLoader):
    """Engines for a few shards writing into one store, as the runner would; events are
    (key, event time, value)."""

    def send(  # type: ignore[override]
        self, shard: int, events: Sequence[tuple[str, int, int]], ended: bool = False
    ) -> None:
        super().send(shard, [{"k": key, "ts": ts, "v": value} for key, ts, value in events], ended)


def finals_as_tuples(store: MemoryFinalStore, name: str) -> list[tuple[str, Window, Any]]:
    return [
        (row.key, Window(row.window_start_ms, row.window_end_ms), row.values)
        for row in sorted(store.read_finals(name), key=lambda r: (r.key, r.window_start_ms))
    ]


def merged_as_tuples(store: MemoryFinalStore, pipe: Pipeline[Any]) -> list[tuple[str, Window, Any]]:
    results = merge_rows(pipe, store.read_rows(pipe.name), store.read_progress(pipe.name))
    return [(r.key, r.window, r.values) for r in results if r.final]


WINDOW_KINDS = {
    "tumbling": TumblingWindows(10),
    "hopping": HoppingWindows(20, 5),
    "sessions": SessionWindows(10),
}

events_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from("abc"),
        st.integers(0, 150),
        st.integers(-5, 50),
    ),
    max_size=60,
)


@pytest.mark.parametrize("steps", ["one step", "small steps"])
@pytest.mark.parametrize("kind", list(WINDOW_KINDS))
@settings(max_examples=120, deadline=None)
@given(events=events_strategy, chunk=st.integers(1, 8), passes=st.lists(st.booleans(), max_size=40))
def test_final_rows_equal_the_merge_of_partial_rows_whenever_the_finalizer_runs(
    kind: str, steps: str, events: list[tuple[int, str, int, int]], chunk: int, passes: list[bool]
) -> None:
    # Small steps: the finalizer reads two windows (or three rows) at a time, so sessions
    # and hopping windows span steps and the step has to grow to decide them.
    small = steps == "small steps"
    with (
        patch.object(finalizer_module, "WINDOWS_PER_STEP", 2 if small else 64),
        patch.object(finalizer_module, "ROWS_PER_STEP", 3 if small else 20_000),
    ):
        check_final_rows(WINDOW_KINDS[kind], events, chunk, passes)


def check_final_rows(
    windows: Windows, events: list[tuple[int, str, int, int]], chunk: int, passes: list[bool]
) -> None:
    pipe = pipeline(windows)
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 3)
    finalizer = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S)
    per_shard = [[(k, ts, v) for s, k, ts, v in events if s == shard] for shard in range(3)]
    runs = iter(passes)
    for offset in range(0, max((len(e) for e in per_shard), default=0), chunk):
        for shard, shard_events in enumerate(per_shard):
            shards.send(shard, shard_events[offset : offset + chunk])
            if next(runs, False):
                finalizer.run_once()
                # What is final now has its final row, equal to its merged partials.
                assert finals_as_tuples(store, pipe.name) == merged_as_tuples(store, pipe)
    shards.end_all()
    finalizer.run_once()

    finals = finals_as_tuples(store, pipe.name)
    assert finals == merged_as_tuples(store, pipe)
    everything = merge_rows(pipe, store.read_rows(pipe.name), store.read_progress(pipe.name))
    assert len(finals) == len(everything), "once every shard ended, every window is final"
    # Every partial row is covered and may expire; running again changes nothing.
    assert len(store.partial_expiry) == len(store.rows)
    finalizer.run_once()
    assert finals_as_tuples(store, pipe.name) == finals


def test_two_finalizers_write_each_final_row_once() -> None:
    pipe = pipeline(TumblingWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 2)
    shards.send(0, [("a", 1, 1), ("b", 12, 2), ("a", 40, 3)])
    shards.send(1, [("a", 3, 4), ("a", 41, 5)])
    first = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()
    second = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()

    assert first.final_rows == 2  # a@0 and b@10; the frontier is 40 - 5 = 35
    assert second.final_rows == 0
    assert finals_as_tuples(store, pipe.name) == [
        ("a", Window(0, 10), {"n": 2, "total": 5}),
        ("b", Window(10, 20), {"n": 1, "total": 2}),
    ]


def test_a_window_still_open_on_one_shard_gets_no_final_row() -> None:
    pipe = pipeline(TumblingWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 2)
    shards.send(0, [("a", 1, 1), ("a", 100, 1)])
    shards.send(1, [("a", 2, 1)])  # shard 1's watermark is 2 - 5: nothing is final
    Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()
    assert store.read_finals(pipe.name) == []
    assert store.finalized_through(pipe.name) == 0


def test_result_ttl_sets_the_expiry_of_final_rows_and_partial_rows_expire_after_finalizing() -> (
    None
):
    pipe = pipeline(TumblingWindows(10_000), result_ttl=timedelta(days=7))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1_000, 1), ("a", 30_000, 1)])
    Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()

    assert store.final_expiry == {(pipe.name, "a", 0): 10 + 7 * 86_400}
    assert set(store.partial_expiry.values()) == {NOW_S + PARTIAL_RETENTION_S}


def test_a_result_ttl_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="result_ttl must be at least one second"):
        pipeline(TumblingWindows(10), result_ttl=timedelta(milliseconds=10))


def test_top_keys_of_each_final_window_are_stored_per_aggregate() -> None:
    pipe = pipeline(TumblingWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 2)
    shards.send(0, [("a", 1, 5), ("b", 2, 1), ("b", 3, 1), ("c", 4, 100)])
    shards.send(1, [("b", 5, 1), ("a", 6, 5), ("x", 50, 0)])
    shards.send(0, [("x", 50, 0)])
    Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()

    assert store.read_top_keys(pipe.name, 0, "n") == [("b", 3), ("a", 2), ("c", 1)]
    assert store.read_top_keys(pipe.name, 0, "total") == [("c", 100), ("a", 10), ("b", 3)]
    assert store.read_top_keys(pipe.name, 50, "n") is None  # not final yet


@pytest.mark.parametrize(
    ("windows", "frontier", "expected"),
    [
        (TumblingWindows(10), 35, 30),
        (TumblingWindows(10), 40, 40),
        (HoppingWindows(20, 5), 40, 25),
        (HoppingWindows(20, 5), 43, 25),
        (HoppingWindows(20, 5), 10, 0),
        (SessionWindows(10), 35, 30),
    ],
)
def test_the_cursor_stops_at_the_first_window_that_may_still_be_open(
    windows: Windows, frontier: int, expected: int
) -> None:
    assert first_open_start(windows, frontier) == expected


# -- alerts -------------------------------------------------------------------------------


def alerting_pipeline() -> Pipeline[dict[str, Any]]:
    return pipeline(
        TumblingWindows(10),
        alerts=(rule("n >= 2", severity="critical"), rule("total > 100")),
    )


def test_each_breached_rule_alerts_once_per_key_and_window() -> None:
    pipe = alerting_pipeline()
    store = MemoryFinalStore()
    sink = MemoryAlertSink()
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 60), ("a", 2, 60), ("b", 3, 1), ("a", 50, 0)])
    finalizer = Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S)
    finalizer.run_once()
    finalizer.run_once()

    sent = sorted((a.rule.text, a.key, a.window_start_ms) for a in sink.published)
    assert sent == [("n >= 2", "a", 0), ("total > 100", "a", 0)]


def test_a_crash_between_final_rows_and_alerts_sends_them_on_the_next_pass() -> None:
    pipe = alerting_pipeline()
    store = MemoryFinalStore()
    sink = MemoryAlertSink(fail_next=1)  # the topic is unreachable for the first pass
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 1), ("a", 2, 1), ("a", 50, 0)])
    finalizer = Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S)
    with pytest.raises(AlertDeliveryError):
        finalizer.run_once()
    assert store.read_finals(pipe.name)  # the final row landed before the failure
    assert store.finalized_through(pipe.name) == 0  # the cursor did not move past it

    finalizer.run_once()
    assert [(a.key, a.rule.text) for a in sink.published] == [("a", "n >= 2")]


def test_a_crash_after_publishing_repeats_the_alert_with_the_same_id() -> None:
    pipe = alerting_pipeline()
    store = MemoryFinalStore()
    sink = MemoryAlertSink()
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 1), ("a", 2, 1), ("a", 50, 0)])

    original = store.record_alerts_sent
    store.record_alerts_sent = lambda *args: (_ for _ in ()).throw(RuntimeError("crash"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="crash"):
        Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S).run_once()
    store.record_alerts_sent = original  # type: ignore[method-assign]
    Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S).run_once()
    Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S).run_once()

    ids = [alert.alert_id for alert in sink.published]
    assert len(ids) == 2 and len(set(ids)) == 1, "repeated once, under the same alert_id"


def test_alerts_come_from_the_stored_final_row() -> None:
    """A pass replayed after a crash alerts on the row as stored, not on a new merge (the
    partial rows may have changed or expired since)."""
    pipe = alerting_pipeline()
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 1), ("a", 2, 1), ("a", 50, 0)])
    Finalizer(pipe, store, MemoryAlertSink(), wall_clock=lambda: NOW_S).run_once()
    slot = (pipe.name, "a", 0)
    codec = StateCodec(pipe.stored_aggregates, pipe.windows.describe())
    states = codec.decode(store.finals[slot].state)
    states[0] = 7  # the count, as if the stored row said 7
    store.finals[slot] = replace(store.finals[slot], state=codec.encode(states))
    store.cursors.clear()  # as if the cursor write and the sent records had been lost
    store.sent_alerts.clear()

    sink = MemoryAlertSink()
    Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S).run_once()
    assert [(a.rule.text, a.value) for a in sink.published] == [("n >= 2", 7)]


def test_a_key_that_never_pauses_does_not_hold_back_other_keys_sessions() -> None:
    pipe = pipeline(SessionWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    busy = [("busy", ts, 1) for ts in range(0, 200, 5)]
    shards.send(0, sorted([*busy, ("quiet", 20, 1)], key=lambda e: e[1]))
    finalizer = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S)
    finalizer.run_once()
    assert finalizer.run_once().final_rows == 0, "written once, not on every pass"

    assert finals_as_tuples(store, pipe.name) == [("quiet", Window(20, 30), {"n": 1, "total": 1})]
    assert store.finalized_through(pipe.name) == 0, "the busy session is still open"


def test_a_session_is_never_cut_by_the_cursor() -> None:
    """Key a's session spans two buckets, key b's open session starts in a's second bucket:
    the cursor must stay before a's session, or the next pass would finalize a fragment."""
    pipe = pipeline(SessionWindows(10), lateness=0)
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    events = [("a", 5, 1), ("a", 12, 200), *[("b", ts, 1) for ts in range(15, 60, 5)]]
    shards.send(0, events)
    finalizer = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S)
    finalizer.run_once()
    shards.send(0, [("b", 62, 1)])  # b goes on
    Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()  # a fresh worker

    assert finals_as_tuples(store, pipe.name) == [("a", Window(5, 22), {"n": 2, "total": 201})]
    assert store.finalized_through(pipe.name) == 0


def test_passes_are_skipped_until_the_frontier_crosses_a_window_end() -> None:
    pipe = pipeline(TumblingWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 1), ("a", 16, 1)])  # frontier 11
    finalizer = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S)
    assert not finalizer.run_once().skipped
    shards.send(0, [("a", 19, 1)])  # frontier 14: no window can have become final
    assert finalizer.run_once().skipped
    shards.send(0, [("a", 25, 1)])  # frontier 20: [10, 20) is final now
    report = finalizer.run_once()
    assert not report.skipped and report.final_rows == 1


def test_alerts_are_recorded_a_batch_at_a_time_and_refused_ones_do_not_stall() -> None:
    pipe = pipeline(TumblingWindows(10), alerts=(rule("n >= 1"),))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    keys = [f"k{i:02d}" for i in range(25)]
    shards.send(0, [*[(key, 1, 1) for key in keys], ("x", 50, 1)])

    class FailsOnSecondBatch(MemoryAlertSink):
        def publish(self, alerts: Sequence[Any]) -> list[tuple[Any, str]]:
            if self.calls == 1 and not self.published[10:]:
                self.calls += 1
                raise AlertDeliveryError("the topic went away")
            return super().publish(alerts)

    sink = FailsOnSecondBatch()
    sink.refuse_keys = {"k24"}
    finalizer = Finalizer(pipe, store, sink, wall_clock=lambda: NOW_S)
    with pytest.raises(AlertDeliveryError):
        finalizer.run_once()
    report = finalizer.run_once()

    delivered = [alert.key for alert in sink.published]
    assert sorted(delivered) == keys[:24], "each delivered once: the first batch not again"
    assert report.alerts_refused == 1
    assert store.refused_alerts == {(pipe.name, alerts_for_key(pipe, "k24")): "refused by the test"}
    assert store.finalized_through(pipe.name) == 40, "a refused alert does not hold the cursor"


def alerts_for_key(pipe: Pipeline[Any], key: str) -> str:
    from processors.alerts import alert_id

    return alert_id(pipe.name, pipe.sinks.alerts[0], key, 0, 10)


def test_queries_read_final_sessions_once_their_buckets_have_expired() -> None:
    pipe = pipeline(SessionWindows(10), lateness=0)
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 1)
    long_session = [("a", ts, 1) for ts in range(0, 200, 5)]
    shards.send(0, sorted([*long_session, ("b", 100, 1), ("a", 300, 1)], key=lambda e: e[1]))
    Finalizer(pipe, store, None, wall_clock=lambda: NOW_S).run_once()
    before = query_windows(store, pipe, "a", 150, 160)
    for slot in list(store.rows):
        if slot[2][1] < 300:
            del store.rows[slot]  # the partial rows of final sessions expired

    assert query_windows(store, pipe, "a", 150, 160) == before
    assert [(r.key, r.window, r.values) for r in before] == [
        ("a", Window(0, 205), {"n": 40, "total": 40})
    ]
    everything = query_windows(store, pipe)
    assert [(r.key, r.window, r.final) for r in everything] == [
        ("a", Window(0, 205), True),
        ("a", Window(300, 310), False),
        ("b", Window(100, 110), True),
    ]
