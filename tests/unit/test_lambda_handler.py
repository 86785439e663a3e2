"""The Lambda runner without AWS: the fixture events (real ESM shapes, tests/fixtures/lambda)
through BatchRunner on the in-memory stores. What it stores must equal one clean pass of
the engine over the same records; retried batches store the same; a failure names the
first record that is not durable, for every pipeline."""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.windowing.engine import REASON_INVALID, REASON_LATE, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.results import final_frontier, merge_rows
from processors.windowing.rows import StoredRow
from schemas.timestamps import format_iso8601
from streams import shard_work
from streams.kpl import MAGIC
from streams.lambda_event import BadEvent, KinesisBatch, first_not_durable, parse_event
from streams.lambda_handler import handler
from streams.lambda_runner import BatchRunner, PipelineSinks
from streams.lambda_shards import Tip, read_tip, register_new_shards
from tests.lambda_events import ARN, FIXTURES, NAMES, kinesis_records, load, rendered
from tests.unit.fake_kinesis import FakeKinesis

IDENTITY = f"{ARN}@2026-06-01T09:00:00+00:00"
SHARDS = [{"ShardId": "shardId-000000000000"}, {"ShardId": "shardId-000000000001"}]


class MemoryClaims:
    """The handler's touch on the in-memory store, with the DynamoDB conditions."""

    def __init__(self, store: MemoryPartialStore) -> None:
        self.store = store
        self.touches: list[tuple[str, str, str]] = []

    def touch(
        self, pipeline: str, stream: str, shard_id: str, token: str, now_ms: int
    ) -> ShardProgress | None:
        progress = self.store.progress.get((pipeline, shard_id))
        if progress is None or progress.idle_since_ms is not None:
            return None
        if self.store.streams.get((pipeline, shard_id)) != stream:
            return None
        self.touches.append((pipeline, shard_id, token))
        return progress

    def get(self, pipeline: str, stream: str, shard_id: str) -> ShardProgress | None:
        stored = self.store.streams.get((pipeline, shard_id))
        if stored is not None and stored != stream:
            raise StreamMismatch(pipeline, stored, stream)
        return self.store.progress.get((pipeline, shard_id))


class Setup:
    def __init__(self, pipelines: Sequence[Any] = (PAGE_VIEWS,)) -> None:
        self.store = MemoryPartialStore()
        self.letters = MemoryDeadLetters()
        self.claims = MemoryClaims(self.store)
        self.runner = BatchRunner(
            IDENTITY,
            [PipelineSinks(p, self.store, self.letters, self.claims) for p in pipelines],
            lambda: SHARDS,
            wall_clock=lambda: 1_800_000_000.0,
        )

    def run(self, event: Mapping[str, Any]) -> dict[str, Any]:
        batch = parse_event(event)
        assert batch is not None
        outcome = self.runner.run(batch, "request-1")
        return outcome.response()


def batch_of(name: str) -> KinesisBatch:
    batch = parse_event(load(name))
    assert batch is not None
    return batch


def by_window(store: MemoryPartialStore) -> dict[tuple[str, str], dict[str, Any]]:
    results = merge_rows(PAGE_VIEWS, store.read_rows(PAGE_VIEWS.name), [])
    return {(r.key, format_iso8601(r.window.start_ms)): r.values for r in results}


def rows(store: MemoryPartialStore) -> dict[tuple[str, str, tuple[str, int]], StoredRow]:
    return dict(store.rows)


def test_fixture_files_are_what_the_generator_makes() -> None:
    for name, text in rendered().items():
        assert (FIXTURES / f"{name}.json").read_text() == text, "run python -m tests.lambda_events"


def test_fixtures_have_the_documented_shape() -> None:
    for name in NAMES:
        event = load(name)
        shards = set()
        for record in event["Records"]:
            assert set(record) == {
                "kinesis",
                "eventSource",
                "eventVersion",
                "eventID",
                "eventName",
                "invokeIdentityArn",
                "awsRegion",
                "eventSourceARN",
            }
            kinesis = record["kinesis"]
            assert set(kinesis) == {
                "kinesisSchemaVersion",
                "partitionKey",
                "sequenceNumber",
                "data",
                "approximateArrivalTimestamp",
            }
            assert record["eventSource"] == "aws:kinesis"
            assert record["eventName"] == "aws:kinesis:record"
            assert len(kinesis["sequenceNumber"]) == 56
            assert isinstance(kinesis["approximateArrivalTimestamp"], float)
            shard, _, sequence = record["eventID"].partition(":")
            assert sequence == kinesis["sequenceNumber"]
            shards.add(shard)
            base64.b64decode(kinesis["data"], validate=True)
        assert len(shards) == 1, "an ESM batch holds one shard"


def test_kpl_records_are_expanded_with_sub_sequence_numbers() -> None:
    batch = batch_of("kpl")
    assert len(batch.raws) == 3
    records = batch.records()
    assert len(records) == 14
    assert [r.position.sub for r in records] == [0, 1, 2, 3, 4, 5, 0, 0, 1, 2, 3, 4, 5, 6]
    assert records[0].partition_key == "fx-100" and records[1].partition_key == "fx-101"
    assert records[0].arrival_ms == 1_780_308_150_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["Records"][1].update(eventSource="aws:sqs"), "not from Kinesis"),
        (lambda e: e["Records"][1].update(eventID="shardId-000000000009:1"), "shard:seq"),
        (
            lambda e: e["Records"][1].update(
                eventID=e["Records"][1]["eventID"].replace("0000:", "0009:")
            ),
            "one batch holds",
        ),
        (lambda e: e["Records"][0]["kinesis"].update(data="@@@"), "not base64"),
        (
            lambda e: [r.update(eventSourceARN="arn:aws:sqs:x:1:q") for r in e["Records"]],
            "stream ARN",
        ),
        (lambda e: e["Records"][0]["kinesis"].pop("partitionKey"), "partitionKey"),
    ],
)
def test_events_that_are_not_one_shards_kinesis_batch_are_refused(
    change: Any, message: str
) -> None:
    event = copy.deepcopy(load("plain"))
    change(event)
    with pytest.raises(BadEvent, match=message):
        parse_event(event)


def test_an_empty_event_is_nothing_to_do() -> None:
    assert parse_event({"Records": []}) is None
    assert handler({"Records": []}, None) == {"batchItemFailures": []}


def expected_from_one_pass() -> dict[tuple[str, str], dict[str, Any]]:
    """Each shard's records (arrival times included: an event stamped far after its
    record's arrival is invalid) through one engine, flushed once at the end."""
    records: dict[str, list[Record]] = {}
    for name in NAMES:
        batch = batch_of(name)
        records.setdefault(batch.shard_id, []).extend(batch.records())
    store = MemoryPartialStore()
    for shard_id, shard_records in records.items():
        engine = ShardEngine(PAGE_VIEWS, store.register_shard(PAGE_VIEWS.name, "s", shard_id))
        engine.process(shard_records, lambda keys: [])
        plan = engine.plan_flush()
        store.write_rows(plan.rows)
    return by_window(store)


def test_the_fixtures_store_what_one_clean_pass_stores() -> None:
    setup = Setup()
    for name in NAMES:
        assert setup.run(load(name)) == {"batchItemFailures": []}
    assert by_window(setup.store) == expected_from_one_pass()
    reasons = sorted(letter.reason for letter in setup.letters.letters)
    assert reasons == [REASON_INVALID] * 4 + [REASON_LATE]
    # Every pipeline touched the shard before applying (the marker's fence).
    assert {shard for _, shard, _ in setup.claims.touches} == {s["ShardId"] for s in SHARDS}


def test_a_retried_batch_stores_the_same_and_sends_no_letter_twice() -> None:
    once = Setup()
    for name in NAMES:
        once.run(load(name))
    twice = Setup()
    for name in (*NAMES, *NAMES):
        assert twice.run(load(name)) == {"batchItemFailures": []}
    twice.run(load("plain"))  # an old batch again, after later ones
    assert rows(twice.store) == rows(once.store)
    assert twice.store.progress == once.store.progress
    assert twice.letters.letters == once.letters.letters


class FailingStore(MemoryPartialStore):
    """Fails chosen writes: a row write once, after its first row; every progress write of
    the pipelines named; every progress write as stale."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_rows = 0
        self.fail_progress_for: set[str] = set()
        self.stale = False

    def write_rows(self, rows: Sequence[StoredRow]) -> None:
        if self.fail_rows:
            self.fail_rows -= 1
            super().write_rows(rows[:1])
            raise ConnectionError("dropped in the middle of the rows")
        super().write_rows(rows)

    def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None:
        if self.stale:
            raise StaleWrite("another runner is processing this shard")
        if pipeline in self.fail_progress_for:
            raise ConnectionError("dropped before the checkpoint")
        super().write_progress(pipeline, stream, progress)


def failing_setup(pipelines: Sequence[Any] = (PAGE_VIEWS,)) -> tuple[Setup, FailingStore]:
    setup = Setup(pipelines)
    store = FailingStore()
    setup.store = store
    setup.claims = MemoryClaims(store)
    setup.runner = BatchRunner(
        IDENTITY,
        [PipelineSinks(p, store, setup.letters, setup.claims) for p in pipelines],
        lambda: SHARDS,
    )
    return setup, store


def test_a_failure_mid_flush_names_the_first_record_and_the_retry_stores_the_same() -> None:
    setup, store = failing_setup()
    setup.run(load("plain"))
    store.fail_rows = 1
    event = load("malformed_late")
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert setup.run(event) == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert setup.run(event) == {"batchItemFailures": []}  # Lambda retries from there
    setup.run(load("kpl"))
    assert by_window(store) == expected_from_one_pass()
    clean = Setup()
    for name in NAMES:
        clean.run(load(name))
    assert rows(store) == rows(clean.store)
    # The letters went out before the rows failed; the retry did not send them again.
    assert setup.letters.letters == clean.letters.letters


COPY = replace(PAGE_VIEWS, name="page-views-copy")
SHARD0 = "shardId-000000000000"


@pytest.mark.parametrize("failing", [PAGE_VIEWS.name, COPY.name])
def test_only_records_after_the_lowest_durable_checkpoint_are_retried(failing: str) -> None:
    """One pipeline's flush fails (the first: the second is not reached and its stored
    checkpoint is read; or the second, after the first made the whole batch durable)."""
    setup, store = failing_setup((PAGE_VIEWS, COPY))
    event = load("plain")
    assert setup.run({"Records": event["Records"][:6]}) == {"batchItemFailures": []}
    store.fail_progress_for = {failing}
    sixth = event["Records"][6]["kinesis"]["sequenceNumber"]
    assert setup.run(event) == {"batchItemFailures": [{"itemIdentifier": sixth}]}
    last = Position.parse(event["Records"][-1]["kinesis"]["sequenceNumber"])
    if failing == COPY.name:
        assert store.progress[(PAGE_VIEWS.name, SHARD0)].checkpoint == last
    store.fail_progress_for = set()
    assert setup.run(event) == {"batchItemFailures": []}
    for name in (PAGE_VIEWS.name, COPY.name):
        assert store.progress[(name, SHARD0)].checkpoint == last
    copied = {
        (key, row.state, row.high_water)
        for (name, _, key), row in store.rows.items()
        if name == COPY.name
    }
    assert copied == {
        (key, row.state, row.high_water)
        for (name, _, key), row in store.rows.items()
        if name == PAGE_VIEWS.name
    }


def test_a_stale_write_is_reported_as_a_failure() -> None:
    setup, store = failing_setup()
    store.stale = True
    event = load("plain")
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert setup.run(event) == {"batchItemFailures": [{"itemIdentifier": first}]}


def test_retry_from_inside_a_kpl_aggregate_is_the_aggregates_sequence_number() -> None:
    records = batch_of("kpl").records()
    aggregate = records[0].position.sequence
    inside = Position(aggregate, 2)
    assert first_not_durable(records, [inside]) == str(aggregate)
    assert first_not_durable(records, [records[-1].position]) is None
    assert first_not_durable(records, [records[-1].position, None]) == str(aggregate)
    assert first_not_durable(records, [records[6].position, records[-1].position]) == str(
        records[7].position.sequence
    )


def test_an_idle_shard_is_woken_before_its_records_are_applied() -> None:
    setup = Setup()
    setup.run(load("kpl"))  # shard 1: watermark 84 s
    setup.run(load("plain"))  # shard 0: watermark 108 s
    shard0 = "shardId-000000000000"
    store = setup.store
    key = (PAGE_VIEWS.name, shard0)
    store.progress[key] = replace(store.progress[key], idle_since_ms=1)
    shard1 = store.progress[(PAGE_VIEWS.name, "shardId-000000000001")]
    frontier = final_frontier(store.read_progress(PAGE_VIEWS.name), 10_000)
    assert frontier == shard1.watermark(10_000)
    setup.claims.touches.clear()
    assert setup.run(load("malformed_late")) == {"batchItemFailures": []}
    woken = store.progress[key]
    assert woken.idle_since_ms is None
    assert woken.watermark_floor == frontier
    assert setup.claims.touches == [(PAGE_VIEWS.name, shard0, "request-1")]


def test_new_shards_are_registered_together_and_children_at_the_frontier() -> None:
    store = MemoryPartialStore()
    listed = [
        {"ShardId": "shardId-000000000000"},
        {"ShardId": "shardId-000000000001"},
        {"ShardId": "shardId-000000000002", "ParentShardId": "shardId-000000000000"},
    ]
    registered = register_new_shards(store, PAGE_VIEWS, IDENTITY, listed)
    assert registered == ["shardId-000000000000", "shardId-000000000001"]  # child waits
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        assert store.progress[(PAGE_VIEWS.name, shard)].watermark_floor is None
    store.write_progress(
        PAGE_VIEWS.name,
        IDENTITY,
        ShardProgress("shardId-000000000001", Position(5), max_event_time=200_000),
    )
    store.write_progress(
        PAGE_VIEWS.name,
        IDENTITY,
        ShardProgress("shardId-000000000000", Position(9), max_event_time=100_000),
    )
    # Lambda gives the child records before the marker saw its parent's end.
    registered = register_new_shards(
        store, PAGE_VIEWS, IDENTITY, listed, invoked="shardId-000000000002"
    )
    assert registered == ["shardId-000000000002"]
    assert store.progress[(PAGE_VIEWS.name, "shardId-000000000002")].watermark_floor == 90_000


def test_read_tip_tells_records_after_the_checkpoint_the_tip_and_the_end() -> None:
    kinesis = FakeKinesis()
    kinesis.put("shardId-000000000000", b"a", b"b", b"c")
    shard = "shardId-000000000000"
    assert read_tip(kinesis, "s", shard, None).after  # type: ignore[arg-type]
    assert read_tip(kinesis, "s", shard, Position(2)).after  # type: ignore[arg-type]
    tip = read_tip(kinesis, "s", shard, Position(3))  # type: ignore[arg-type]
    assert tip.at_tip and not tip.ended and not tip.after
    assert tip.last_arrival_ms == 1_795_737_600_000  # the fake's arrival: 2026-11-27
    kinesis.closed.add(shard)
    kinesis.end_on_empty_read = True
    ended = read_tip(kinesis, "s", shard, Position(3), closed=True)  # type: ignore[arg-type]
    assert ended.ended and ended.at_tip
    assert not read_tip(kinesis, "s", shard, Position(2), closed=True).ended  # type: ignore[arg-type]
    kinesis.faults.append("ProvisionedThroughputExceededException")
    assert read_tip(kinesis, "s", shard, Position(3)) == Tip()  # type: ignore[arg-type]


def test_two_batches_of_one_shard_at_once_would_lose_records() -> None:
    """Why the template sets ParallelizationFactor to 1: with more, Lambda runs several
    batches of one shard at once. Both start from the same checkpoint; the later one's
    flush moves the checkpoint past the earlier batch, whose flush then fails (stale), and
    whose retry skips its records as already durable. Events are lost."""
    store = MemoryPartialStore()
    letters = MemoryDeadLetters()
    records = batch_of("plain").records()
    earlier, later = records[:7], records[7:]
    engines = [
        ShardEngine(PAGE_VIEWS, store.register_shard(PAGE_VIEWS.name, IDENTITY, SHARD0))
        for _ in range(2)
    ]
    shard_work.process(engines[0], store, earlier)
    shard_work.process(engines[1], store, later)
    shard_work.flush(engines[1], store, letters, IDENTITY)
    with pytest.raises(StaleWrite):
        shard_work.flush(engines[0], store, letters, IDENTITY)
    retry = ShardEngine(PAGE_VIEWS, store.register_shard(PAGE_VIEWS.name, IDENTITY, SHARD0))
    shard_work.process(retry, store, earlier)
    assert shard_work.flush(retry, store, letters, IDENTITY) is None  # "already durable"
    views = sum(values["views"] for values in by_window(store).values())
    assert views < len(records)


def test_a_checkpoint_inside_a_kpl_aggregate_is_not_the_tip() -> None:
    kinesis = FakeKinesis()
    aggregate = next(data for _, data in kinesis_records(load("kpl")) if data[:4] == MAGIC)
    kinesis.put(SHARD0, aggregate)  # six user records, at sequence 1
    assert read_tip(kinesis, "s", SHARD0, Position(1, 2)).after  # type: ignore[arg-type]
    assert read_tip(kinesis, "s", SHARD0, Position(1, 5)).at_tip  # type: ignore[arg-type]


def test_a_child_registered_while_another_worker_moves_the_frontier_gets_a_floor_that_holds() -> (
    None
):
    """Lambda invokes a child before the finalizer saw its parent end; between the
    handler's read of the frontier and its registration of the child, another shard's
    invocation flushes further (and a finalizer may finalize up to the new frontier)."""
    from processors.pipelines.page_views import PAGE_VIEWS
    from processors.sinks.memory import MemoryPartialStore
    from processors.windowing.engine import ShardProgress
    from processors.windowing.records import Position
    from processors.windowing.results import final_frontier
    from streams.lambda_shards import register_new_shards

    lateness = PAGE_VIEWS.allowed_lateness_ms
    name = PAGE_VIEWS.name
    listed = [
        {
            "ShardId": "P",
            "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
        },
        {"ShardId": "S", "SequenceNumberRange": {"StartingSequenceNumber": "1"}},
        {
            "ShardId": "C",
            "ParentShardId": "P",
            "SequenceNumberRange": {"StartingSequenceNumber": "10"},
        },
    ]
    store = MemoryPartialStore()
    store.register_shard(name, "id", "P")
    store.register_shard(name, "id", "S")
    store.write_progress(
        name, "id", ShardProgress("P", Position(5), max_event_time=100_000 + lateness, ended=True)
    )
    store.write_progress(
        name, "id", ShardProgress("S", Position(5), max_event_time=50_000 + lateness)
    )
    real_read = store.read_progress
    seen_in_gap: list[int | None] = []

    def read_progress(pipeline: str) -> list[ShardProgress]:
        out = real_read(pipeline)
        if not seen_in_gap:
            store.write_progress(
                name, "id", ShardProgress("S", Position(7), max_event_time=90_000 + lateness)
            )
            seen_in_gap.append(final_frontier(real_read(pipeline), lateness))
        return out

    store.read_progress = read_progress  # type: ignore[method-assign]
    register_new_shards(store, PAGE_VIEWS, "id", listed, invoked="C")

    child = {p.shard_id: p for p in real_read(name)}["C"]
    assert seen_in_gap == [90_000]
    assert child.watermark_floor == 90_000, "no window final in the gap can take C's events"
