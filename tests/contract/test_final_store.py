"""One contract for every FinalStore: the in-memory fake and DynamoDB on the emulator.

The finalizer relies on these: the window index finds every partial row of a window,
a final row is written once and read back as stored, the cursor never moves back, sent
alerts are remembered, and nothing is read with a Scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from processors.alerts import alerts_for, rule
from processors.finalizer import Finalizer
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.memory import MemoryAlertSink, MemoryFinalStore
from processors.windowing.finals import FinalRow
from processors.windowing.records import Position
from processors.windowing.rows import StoredRow
from processors.windowing.windows import SessionWindows, TumblingWindows, Window
from tests.conftest import Emulator, make_aws_env
from tests.unit.test_finalizer import Shards, pipeline

Store = Any  # MemoryFinalStore | DynamoPartialStore: both are PartialStore and FinalStore


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryFinalStore()
        return
    emulator: Emulator = request.getfixturevalue("emulator")
    aws = make_aws_env(emulator, shards=1)
    dynamo = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table, {"finals-test": 3600})
    yield dynamo
    dynamo.close()


def row(key: str, start: int, shard: str, pipeline: str = "p") -> StoredRow:
    return StoredRow(pipeline, key, Window(start, start + 10), shard, Position(1), b"{}")


def final(key: str, start: int, n: int, pipeline: str = "p") -> FinalRow:
    return FinalRow(pipeline, key, start, start + 10, {"n": n, "top": [["x", 1]]}, b"s", 2)


def test_the_window_index_finds_every_partial_row_of_a_window(store: Store) -> None:
    rows = [row("a", 0, "s-1"), row("a", 0, "s-2"), row("b#1", 0, "s-1"), row("a", 10, "s-1")]
    store.write_rows(rows)
    store.write_rows(rows)  # rewriting adds nothing to the index

    assert store.window_starts("p", 0, 100) == [0, 10]
    assert store.window_starts("p", 5, 10) == []
    assert store.window_starts("other", 0, 100) == []
    assert store.window_keys("p", 0) == ["a", "b#1"]
    assert store.window_keys("p", 5) == []
    found = store.window_rows("p", 0)
    assert sorted((r.key, r.shard_id) for r in found) == [
        ("a", "s-1"),
        ("a", "s-2"),
        ("b#1", "s-1"),
    ]


def test_a_final_row_is_written_once_and_read_back_as_stored(store: Store) -> None:
    assert store.write_finals([final("a", 0, 3), final("b", 0, 1)], None) == [
        final("a", 0, 3),
        final("b", 0, 1),
    ]
    # A second finalizer with (impossibly) other values gets the stored row back.
    assert store.write_finals([final("a", 0, 99)], None) == [final("a", 0, 3)]
    assert store.read_finals("p", "a") == [final("a", 0, 3)]
    assert store.read_finals("p", "a", 1, None) == []
    store.write_rows([row("a", 0, "s-1"), row("b", 0, "s-1")])
    assert sorted(r.key for r in store.read_finals("p", None, 0, 10)) == ["a", "b"]


def test_the_cursor_never_moves_back(store: Store) -> None:
    assert store.finalized_through("p") is None
    store.set_finalized_through("p", 0)
    store.set_finalized_through("p", 40)
    store.set_finalized_through("p", 20)
    assert store.finalized_through("p") == 40


def test_sent_alerts_are_remembered(store: Store) -> None:
    alerts = alerts_for("p", [rule("n > 1")], "a", 0, 10, {"n": 2})
    ids = [alert.alert_id for alert in alerts]
    assert store.unsent_alerts("p", ids) == set(ids)
    store.record_alerts_sent("p", alerts, None)
    assert store.unsent_alerts("p", ids) == set()
    assert store.unsent_alerts("other", ids) == set(ids)


def test_top_keys_round_trip(store: Store) -> None:
    store.write_top_keys("p", 0, 10, {"n": [("a", 3), ("b", 1.5)]}, 7, None)
    assert store.read_top_keys("p", 0, "n") == [("a", 3), ("b", 1.5)]
    assert store.read_top_keys("p", 0, "other") is None
    assert store.read_top("p", 0, "n") == ([("a", 3), ("b", 1.5)], 7)
    assert store.read_top("p", 10, "n") is None


def test_the_latest_window_is_one_read_away(store: Store) -> None:
    assert store.latest_window_start("p", 10**13) is None
    store.write_rows([row("a", 0, "s-1"), row("b", 20, "s-1"), row("a", 40, "s-2")])
    assert store.latest_window_start("p", 10**13) == 40
    assert store.latest_window_start("p", 40) == 20
    assert store.latest_window_start("p", 21) == 20
    assert store.latest_window_start("p", 0) is None
    assert store.latest_window_start("other", 10**13) is None


def test_the_finalizer_gives_the_same_final_rows_on_every_store(store: Store) -> None:
    pipe = pipeline(
        TumblingWindows(10), result_ttl=timedelta(hours=1), alerts=(rule("total >= 10"),)
    )
    sink = MemoryAlertSink()
    shards = Shards(pipe, store, 2)
    shards.send(0, [("a", 1, 5), ("b", 2, 1), ("a", 14, 2), ("a", 31, 1)])
    shards.send(1, [("a", 3, 7), ("c", 12, 1), ("b", 33, 1)])
    Finalizer(pipe, store, sink).run_once()

    finals = sorted(store.read_finals(pipe.name), key=lambda r: (r.window_start_ms, r.key))
    assert [(r.key, r.window_start_ms, r.values, r.shards) for r in finals] == [
        ("a", 0, {"n": 2, "total": 12}, 2),
        ("b", 0, {"n": 1, "total": 1}, 1),
        ("a", 10, {"n": 1, "total": 2}, 1),
        ("c", 10, {"n": 1, "total": 1}, 1),
    ]
    assert [(a.key, a.window_start_ms, a.value) for a in sink.published] == [("a", 0, 12)]
    assert store.finalized_through(pipe.name) == 20
    assert store.read_top_keys(pipe.name, 10, "n") == [("a", 1), ("c", 1)]


def test_rows_written_before_the_index_existed_are_found_by_the_first_pass(
    emulator: Emulator,
) -> None:
    aws = make_aws_env(emulator, shards=1)
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    pipe = pipeline(TumblingWindows(10))
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 1, 5), ("a", 40, 1)])
    # Remove the index items, as a table written by an earlier version would lack them.
    client = aws.clients.dynamodb
    for page in client.get_paginator("scan").paginate(TableName=aws.settings.table):
        for item in page["Items"]:
            if item["pk"]["S"].startswith(("windows#", "keys#")):
                client.delete_item(
                    TableName=aws.settings.table, Key={"pk": item["pk"], "sk": item["sk"]}
                )
    fresh = DynamoPartialStore(client, aws.settings.table)  # no cache of what was indexed
    assert fresh.window_starts(pipe.name, 0, 100) == []
    Finalizer(pipe, fresh, None).run_once()
    assert [(r.key, r.window_start_ms) for r in fresh.read_finals(pipe.name)] == [("a", 0)]
    store.close()
    fresh.close()


def test_the_longest_key_the_engine_accepts_is_indexed_and_finalized(store: Store) -> None:
    long_key = "k" * 1024  # MAX_KEY_BYTES: DynamoDB's whole sort key may be no longer
    pipe = pipeline(TumblingWindows(10))
    shards = Shards(pipe, store, 1)
    shards.send(0, [(long_key, 1, 5), (long_key, 40, 1)])
    Finalizer(pipe, store, None).run_once()
    assert [(r.key, r.values) for r in store.read_finals(pipe.name, long_key)] == [
        (long_key, {"n": 1, "total": 5})
    ]
    assert [r.key for r in store.read_finals(pipe.name, None, 0, 10)] == [long_key]


def test_final_sessions_are_found_by_key_and_through_the_window_index(store: Store) -> None:
    pipe = pipeline(SessionWindows(10), lateness=0)
    shards = Shards(pipe, store, 1)
    shards.send(0, [("a", 3, 1), ("a", 11, 1), ("b", 14, 1), ("a", 100, 1)])
    Finalizer(pipe, store, None).run_once()
    sessions = [(r.key, r.window_start_ms, r.window_end_ms) for r in store.read_finals(pipe.name)]
    assert sorted(sessions) == [("a", 3, 21), ("b", 14, 24)]
    assert [r.window_start_ms for r in store.read_finals(pipe.name, "a", 0, 50)] == [3]
    assert [r.key for r in store.read_finals(pipe.name, None, 10, 20)] == ["b"]
