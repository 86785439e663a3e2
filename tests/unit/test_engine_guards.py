"""Inputs that must never stop a shard or corrupt state: keys too long to store, event
times from a broken producer clock, records delivered twice, changed window sizes."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.codec import IncompatibleState
from processors.windowing.engine import REASON_INVALID, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.rows import StoredRow
from processors.windowing.windows import TumblingWindows, Window

ARRIVAL = 1_795_000_000_000


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
