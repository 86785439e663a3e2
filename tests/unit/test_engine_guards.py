"""Inputs that must never stop a shard or corrupt state: keys too long to store, event
times from a broken producer clock, records delivered twice, changed window sizes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.codec import IncompatibleState
from processors.windowing.engine import REASON_INVALID, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.rows import StoredRow
from processors.windowing.windows import HoppingWindows, TumblingWindows, Window
from schemas.page_views import PageView

ARRIVAL = 1_795_000_000_000
HOPPING_PIPELINE = replace(PAGE_VIEWS, name="hop", windows=HoppingWindows(60_000, 20_000))


def record(seq: int, ts: int, page: str = "/a", arrival: int | None = ARRIVAL) -> Record:
    data = orjson.dumps({"event_id": str(seq), "ts": ts, "page": page})
    return Record("s0", Position(seq), "pk", data, arrival)


def no_rows(keys: object) -> list[StoredRow]:
    return []


def test_a_key_too_long_for_dynamodb_is_invalid_not_fatal() -> None:
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    engine.process([record(1, ARRIVAL, page="/" + "é" * 600), record(2, ARRIVAL)], no_rows)
    plan = engine.plan_flush()
    assert [letter.reason for letter in plan.dead_letters] == [REASON_INVALID]
    assert "longer than 1024 bytes" in plan.dead_letters[0].error
    assert [row.key for row in plan.rows] == ["/a"]


def test_an_event_from_the_future_is_invalid_and_does_not_move_the_watermark() -> None:
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    far = ARRIVAL + 2 * 3_600_000
    engine.process([record(1, far), record(2, ARRIVAL - 5_000)], no_rows)
    plan = engine.plan_flush()
    assert [letter.reason for letter in plan.dead_letters] == [REASON_INVALID]
    assert "after the record arrived" in plan.dead_letters[0].error
    assert engine.max_event_time == ARRIVAL - 5_000
    assert len(plan.rows) == 1


def test_the_future_check_can_be_turned_off_and_ignores_records_without_arrival() -> None:
    lenient = replace(PAGE_VIEWS, max_future_ms=None)
    engine = ShardEngine(lenient, ShardProgress("s0"))
    engine.process([record(1, ARRIVAL + 10**9)], no_rows)
    strict = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    strict.process([record(1, ARRIVAL + 10**9, arrival=None)], no_rows)
    assert engine.plan_flush().dead_letters == strict.plan_flush().dead_letters == []


def test_records_delivered_again_to_a_live_engine_are_skipped() -> None:
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    engine.process([record(1, ARRIVAL), record(2, ARRIVAL + 1)], no_rows)
    engine.confirm_flush(engine.plan_flush())
    engine.process([record(2, ARRIVAL + 1), record(3, ARRIVAL + 2)], no_rows)
    [row] = engine.plan_flush().rows
    assert row.high_water == Position(3)
    assert engine.snapshot()[("/a", row.window.start_ms)].states[0] == 3


def test_a_stored_row_with_another_window_size_is_refused() -> None:
    start = ARRIVAL - ARRIVAL % 60_000
    stored = StoredRow("page-views", "/a", Window(start, start + 30_000), "s0", Position(1), b"{}")
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0", Position(1), start, start + 10**6))
    with pytest.raises(IncompatibleState, match="new name") as refused:
        engine.process([record(2, start + 5)], lambda keys: [stored])
    assert TumblingWindows(60_000).describe() in str(refused.value)


_events = st.lists(
    st.tuples(
        st.integers(0, 300_000),  # event time
        st.sampled_from(["/a", "/b", "/" + "x" * 2_000, "bad"]),  # page (or not JSON)
        st.booleans(),  # from the future (arrival long before the event time)
    ),
    max_size=25,
)


@given(_events, st.integers(0, 200_000))
@settings(max_examples=300)
def test_rows_to_load_asks_for_exactly_the_stored_rows_apply_touches(
    events: list[tuple[int, str, bool]], horizon: int
) -> None:
    """After a restart the engine loads rows before applying a batch. It must ask for every
    row that apply then touches (or a stored row would be started again) and for no row of
    a record apply rejects (a key DynamoDB cannot store would stop the shard)."""
    records = []
    for seq, (ts, page, future) in enumerate(events, start=1):
        data = (
            b"{not json"
            if page == "bad"
            else orjson.dumps({"event_id": str(seq), "ts": ts, "page": page})
        )
        records.append(Record("s0", Position(seq), "pk", data, ts - 7_200_000 if future else ts))
    progress = ShardProgress("s0", checkpoint=None, max_event_time=None, horizon=horizon)
    engine = ShardEngine(HOPPING_PIPELINE, progress)
    asked = set(engine.rows_to_load(records))
    engine.restore_rows(asked, [])
    before = set(engine.snapshot())
    engine.apply(records)
    touched = {key for key, row in engine.snapshot().items() if row.dirty and key[1] <= horizon}
    assert touched <= asked | before
    assert all(len(key.encode()) <= 1024 for key, _ in asked)


def test_a_record_that_raises_midway_is_not_counted_as_applied() -> None:
    def key(event: Any) -> str:
        if event.page == "/boom":
            raise KeyError("boom")
        return str(event.page)

    pipeline = replace(PAGE_VIEWS, name="fragile", key=key)
    engine = ShardEngine(pipeline, ShardProgress("s0"))
    with pytest.raises(KeyError):
        engine.apply([record(1, ARRIVAL), record(2, ARRIVAL, page="/boom"), record(3, ARRIVAL)])
    assert engine.position == Position(1)  # record 2 did not complete, so nothing after it
    engine.plan_flush()  # nothing was half-applied: the engine can still flush


def test_an_engine_left_half_applied_refuses_to_flush() -> None:
    class Exploding:
        kind, version = "exploding", 1

        def initial(self) -> int:
            return 0

        def add(self, state: int, value: Any) -> int:
            raise ArithmeticError("boom")

        def to_stored(self, state: int) -> int:
            return state

    pipeline = replace(
        PAGE_VIEWS,
        name="half",
        aggregates=(*PAGE_VIEWS.aggregates, AggregateSpec("x", Exploding())),  # type: ignore[arg-type]
    )
    engine = ShardEngine(pipeline, ShardProgress("s0"))
    with pytest.raises(ArithmeticError):
        engine.apply([record(1, ARRIVAL)])
    with pytest.raises(RuntimeError, match="restart from the last checkpoint"):
        engine.plan_flush()


def test_an_event_before_the_epoch_is_invalid() -> None:
    pipeline = replace(PAGE_VIEWS, name="any-time", decode=lambda data: PageView("e", -5, "/a"))
    engine = ShardEngine(pipeline, ShardProgress("s0"))
    engine.process([record(1, 0)], no_rows)
    [letter] = engine.plan_flush().dead_letters
    assert letter.reason == REASON_INVALID and "before the epoch" in letter.error
