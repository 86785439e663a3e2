"""Hopping windows: every window of ``size`` that starts on the ``step`` grid and holds the
event; lateness is decided per window, and a restart still counts each event once per
window."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dead_letters import dead_letter_body, dead_letter_id
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.codec import IncompatibleState
from processors.windowing.engine import REASON_LATE, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.results import merge_rows
from processors.windowing.windows import HoppingWindows, Window

MINUTE = 60_000
HOPPING = replace(PAGE_VIEWS, name="page-views-hopping", windows=HoppingWindows(MINUTE, 20_000))


@pytest.mark.parametrize(
    ("ts", "starts"),
    [
        (65_000, [20_000, 40_000, 60_000]),
        (60_000, [20_000, 40_000, 60_000]),
        (59_999, [0, 20_000, 40_000]),
        (5_000, [0]),
        (25_000, [0, 20_000]),
    ],
)
def test_assignment_table(ts: int, starts: list[int]) -> None:
    windows = HoppingWindows(MINUTE, 20_000).assign(ts)
    assert [w.start_ms for w in windows] == starts
    assert all(w.end_ms == w.start_ms + MINUTE for w in windows)


@given(st.integers(0, 10**13), st.integers(1, 50), st.integers(1, 6))
@settings(max_examples=300)
def test_assignment_is_every_aligned_window_holding_the_event(ts: int, step: int, k: int) -> None:
    size = step * k
    got = HoppingWindows(size, step).assign(ts)
    last = ts - ts % step
    expected = [
        Window(start, start + size)
        for start in range(last - size + step, last + 1, step)
        if start >= 0
    ]
    assert list(got) == expected
    assert all(w.start_ms <= ts < w.end_ms for w in got)


@pytest.mark.parametrize(("size", "step"), [(60, 0), (0, 10), (60, 25), (60, 120), (-60, 20)])
def test_bad_shapes_are_refused(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        HoppingWindows(size, step)


def record(seq: int, ts: int, page: str = "/a") -> Record:
    return Record(
        "s0", Position(seq), "pk", orjson.dumps({"event_id": str(seq), "ts": ts, "page": page})
    )


def flush(engine: ShardEngine, store: MemoryPartialStore, sent: list[Any]) -> None:
    plan = engine.plan_flush()
    sent.extend(plan.dead_letters)
    if plan.intent is not None:
        store.write_intent(engine.pipeline.name, "stream", plan.intent)
    store.write_rows(plan.rows)
    if plan.progress is not None:
        store.write_progress(engine.pipeline.name, "stream", plan.progress)
    engine.confirm_flush(plan)


def views(store: MemoryPartialStore) -> dict[int, int]:
    results = merge_rows(HOPPING, store.read_rows(HOPPING.name), store.read_progress(HOPPING.name))
    return {r.window.start_ms: r.values["views"] for r in results}


def test_an_event_counts_once_in_each_of_its_windows() -> None:
    store, sent = MemoryPartialStore(), []
    engine = ShardEngine(HOPPING, ShardProgress("s0"))
    engine.process([record(1, 65_000), record(2, 70_000)], lambda keys: [])
    flush(engine, store, sent)
    assert views(store) == {20_000: 2, 40_000: 2, 60_000: 2}


def test_lateness_is_decided_per_window() -> None:
    """After an event at 140 s the watermark is 130 s. An event at 95 s belongs to
    [40 s, 100 s), [60 s, 120 s) and [80 s, 140 s): the first two are closed, so it counts
    only in the third, and one dead letter names both windows it missed."""
    store, sent = MemoryPartialStore(), []
    engine = ShardEngine(HOPPING, ShardProgress("s0"))
    engine.process([record(1, 140_000), record(2, 95_000)], lambda keys: [])
    flush(engine, store, sent)
    assert views(store) == {80_000: 1, 100_000: 1, 120_000: 1, 140_000: 1}
    [late] = [letter for letter in sent if letter.reason == REASON_LATE]
    assert [w.start_ms for w in late.missed_windows] == [40_000, 60_000]
    assert late.window is not None and late.window.start_ms == 40_000
    body = dead_letter_body(late, "stream")
    assert body["missed_windows"] == [[40_000, 100_000], [60_000, 120_000]]
    assert dead_letter_id(late) == "page-views-hopping:s0:2:0"


def test_a_restart_counts_each_event_once_per_window() -> None:
    events = [record(seq, 1_000 * seq * 7) for seq in range(1, 40)]
    clean, clean_sent = MemoryPartialStore(), []
    engine = ShardEngine(HOPPING, ShardProgress("s0"))
    engine.process(events, lambda keys: [])
    flush(engine, clean, clean_sent)

    store, sent = MemoryPartialStore(), []
    first = ShardEngine(HOPPING, store.register_shard(HOPPING.name, "stream", "s0"))
    first.process(events[:15], lambda keys: [])
    flush(first, store, sent)
    first.process(events[15:25], lambda keys: [])
    plan = first.plan_flush()
    if plan.intent is not None:
        store.write_intent(HOPPING.name, "stream", plan.intent)
    store.write_rows(plan.rows)  # the rows land, then the process dies before the checkpoint
    second = ShardEngine(HOPPING, store.register_shard(HOPPING.name, "stream", "s0"))
    second.process(events[15:], lambda keys: store.load_rows(HOPPING.name, "s0", keys))
    flush(second, store, sent)
    assert views(store) == views(clean)


def test_rows_written_under_another_step_are_refused() -> None:
    """Same size, same window starts, other step: only the stored windows tell them apart."""
    store = MemoryPartialStore()
    engine = ShardEngine(HOPPING, store.register_shard(HOPPING.name, "stream", "s0"))
    engine.process([record(1, 65_000)], lambda keys: [])
    flush(engine, store, [])
    other_step = replace(HOPPING, windows=HoppingWindows(MINUTE, 10_000))
    restarted = ShardEngine(other_step, store.register_shard(HOPPING.name, "stream", "s0"))
    with pytest.raises(IncompatibleState, match="hopping 60000 ms every 20000 ms"):
        restarted.process(
            [record(2, 66_000)], lambda keys: store.load_rows(HOPPING.name, "s0", keys)
        )
    with pytest.raises(IncompatibleState, match="give it a new name"):
        merge_rows(other_step, store.read_rows(HOPPING.name), [])
