"""One contract for every PartialStore: the in-memory fake and DynamoDB on the emulator.

The exactly-once invariant rests on these behaviours: rows and checkpoints never move
back, equal rewrites are idempotent, reads are exact."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest

from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.query import query_windows
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.memory import MemoryPartialStore
from processors.sinks.ports import PartialStore, StaleWrite, StreamMismatch
from processors.windowing.engine import Intent, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.rows import StoredRow
from processors.windowing.windows import Window
from schemas.timestamps import MAX_EPOCH_MS
from tests.conftest import Emulator, make_aws_env

BIG_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[PartialStore]:
    if request.param == "memory":
        yield MemoryPartialStore()
        return
    emulator: Emulator = request.getfixturevalue("emulator")
    aws = make_aws_env(emulator, shards=1)
    dynamo = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    yield dynamo
    dynamo.close()


def row(
    key: str, start: int, hw: int, state: bytes = b"{}", shard: str = "s-1", pipeline: str = "p"
) -> StoredRow:
    return StoredRow(pipeline, key, Window(start, start + 60_000), shard, Position(hw), state)


def test_a_new_shard_starts_with_empty_progress(store: PartialStore) -> None:
    assert store.register_shard("p", "stream", "s-1") == ShardProgress("s-1")
    assert store.read_progress("p") == [ShardProgress("s-1")]
    assert store.read_progress("other") == []


def test_progress_round_trips_and_never_moves_back(store: PartialStore) -> None:
    store.register_shard("p", "stream", "s-1")
    progress = ShardProgress(
        "s-1", Position(BIG_SEQUENCE, 3), 1_000, 601_000, Position(BIG_SEQUENCE, 1), False
    )
    store.write_progress("p", "stream", progress)
    assert store.register_shard("p", "stream", "s-1") == progress
    with pytest.raises(StaleWrite):
        store.write_progress("p", "stream", ShardProgress("s-1", Position(BIG_SEQUENCE, 2)))
    store.write_progress("p", "stream", progress)  # the same checkpoint again is fine
    ended = ShardProgress("s-1", Position(BIG_SEQUENCE + 1), 2_000, 601_000, None, True)
    store.write_progress("p", "stream", ended)
    assert store.read_progress("p") == [ended]


def test_intent_raises_the_horizon_and_records_sent_dead_letters(store: PartialStore) -> None:
    store.register_shard("p", "stream", "s-1")
    store.write_intent("p", "stream", Intent("s-1", 700_000, Position(9)))
    progress = store.register_shard("p", "stream", "s-1")
    assert (progress.horizon, progress.dead_letters_through) == (700_000, Position(9))
    with pytest.raises(StaleWrite):
        store.write_intent("p", "stream", Intent("s-1", 600_000, Position(10)))


def test_rows_round_trip_and_only_move_forward(store: PartialStore) -> None:
    store.write_rows([row("/a", 0, 5, b'{"n":1}'), row("/b#with#hashes", 60_000, 6)])
    loaded = store.load_rows("p", "s-1", [("/a", 0), ("/b#with#hashes", 60_000), ("/c", 0)])
    assert sorted(loaded, key=lambda r: r.key) == [
        row("/a", 0, 5, b'{"n":1}'),
        row("/b#with#hashes", 60_000, 6),
    ]
    store.write_rows([row("/a", 0, 5, b'{"n":1}')])  # an identical rewrite is idempotent
    store.write_rows([row("/a", 0, 9, b'{"n":2}')])
    with pytest.raises(StaleWrite):
        store.write_rows([row("/a", 0, 7, b'{"n":0}')])
    assert store.load_rows("p", "s-1", [("/a", 0)]) == [row("/a", 0, 9, b'{"n":2}')]


def test_rows_are_per_shard_and_per_pipeline(store: PartialStore) -> None:
    store.write_rows(
        [row("/a", 0, 1, shard="s-1"), row("/a", 0, 1, shard="s-2"), row("/a", 0, 1, pipeline="q")]
    )
    assert len(store.load_rows("p", "s-1", [("/a", 0)])) == 1
    assert len(store.read_rows("p", "/a")) == 2
    assert len(store.read_rows("q")) == 1


def test_loading_many_rows_at_once(store: PartialStore) -> None:
    rows = [row(f"/k{i}", 0, i + 1) for i in range(230)]
    store.write_rows(rows)
    loaded = store.load_rows("p", "s-1", [r.row_key for r in rows])
    assert sorted(loaded, key=lambda r: r.high_water) == rows


def test_reading_by_key_and_window_start(store: PartialStore) -> None:
    store.write_rows([row("/a", start, 1) for start in (0, 60_000, 120_000, 180_000)])
    store.write_rows([row("/b", 60_000, 1)])
    starts = [r.window.start_ms for r in store.read_rows("p", "/a", 60_000, 180_000)]
    assert sorted(starts) == [60_000, 120_000]
    assert len(store.read_rows("p", None, 60_000, 120_000)) == 2
    assert len(store.read_rows("p")) == 5
    assert store.read_rows("p", "/a", 120_000, 120_000) == []


def test_a_shard_of_another_stream_is_refused(store: PartialStore) -> None:
    store.register_shard("p", "arn:stream/a@2026-01-01", "s-1")
    with pytest.raises(StreamMismatch, match="stream arn:stream/a@2026-01-01"):
        store.register_shard("p", "arn:stream/a@2026-06-01", "s-1")


def test_an_empty_shard_can_end_without_a_checkpoint(store: PartialStore) -> None:
    store.register_shard("p", "stream", "s-1")
    store.write_progress("p", "stream", ShardProgress("s-1", ended=True))
    assert store.read_progress("p") == [ShardProgress("s-1", ended=True)]
    store.write_progress("p", "stream", ShardProgress("s-2", Position(5)))
    with pytest.raises(StaleWrite):
        store.write_progress("p", "stream", ShardProgress("s-2", ended=True))


def test_idleness_and_the_watermark_floor_round_trip(store: PartialStore) -> None:
    store.register_shard("p", "stream", "s-1")
    idle = ShardProgress("s-1", Position(7), 5_000, 605_000, idle_since_ms=1_795_773_600_123)
    store.write_progress("p", "stream", idle)
    assert store.read_progress("p") == [idle]
    # An intent (written before rows) keeps the idle mark and the floor.
    woke = replace(idle, idle_since_ms=None, watermark_floor=90_000)
    store.write_progress("p", "stream", woke)
    store.write_intent("p", "stream", Intent("s-1", 700_000, None))
    assert store.read_progress("p") == [replace(woke, horizon=700_000)]


def test_a_new_shard_can_start_at_a_watermark_floor_and_an_old_one_keeps_its_progress(
    store: PartialStore,
) -> None:
    assert store.register_shard("p", "stream", "child", watermark_floor=120_000) == ShardProgress(
        "child", watermark_floor=120_000
    )
    store.write_progress("p", "stream", ShardProgress("child", Position(3), 200_000))
    again = store.register_shard("p", "stream", "child", watermark_floor=999_000)
    assert again == ShardProgress("child", Position(3), 200_000)
    assert store.read_progress("p") == [again]


def test_a_session_query_to_the_end_of_time_finds_the_sessions(store: PartialStore) -> None:
    """Widening a session read must stay within the 13-digit keys: past them a DynamoDB
    range read sorts below every row and returns nothing."""
    pipeline = DEVICE_SESSIONS
    engine = ShardEngine(pipeline, store.register_shard(pipeline.name, "stream", "s-1"))
    data = orjson.dumps({"device_id": "d1", "ts": 1_795_773_600_000})
    engine.process([Record("s-1", Position(1), "pk", data)], lambda keys: [])
    plan = engine.plan_flush()
    store.write_rows(plan.rows)
    for until in (None, MAX_EPOCH_MS, 2_000_000_000_000):
        (session,) = query_windows(store, pipeline, "d1", 0, until)
        assert session.values["readings"] == 1


def test_a_redrive_claim_is_kept_by_the_first_shard_that_makes_it(store: PartialStore) -> None:
    assert store.load_redrive_claims("p", ["a", "b"]) == {}
    store.write_redrive_claims("p", "s-1", {"a": Position(BIG_SEQUENCE, 2)})
    store.write_redrive_claims("p", "s-1", {"a": Position(BIG_SEQUENCE, 2)})  # idempotent
    store.write_redrive_claims("p", "s-2", {"a": Position(5), "b": Position(6)})  # a is taken
    assert store.load_redrive_claims("p", ["a", "b", "c"]) == {
        "a": ("s-1", Position(BIG_SEQUENCE, 2)),
        "b": ("s-2", Position(6)),
    }
    assert store.load_redrive_claims("other", ["a"]) == {}
