"""The Lambda handler on the emulator, against the embedded runner on the same records.

The fixture events' records (tests/fixtures/lambda: plain, KPL-aggregated, malformed and
late) are put into a 2-shard stream, read back, and the events rewritten to the stream's
ARN, shard ids, sequence numbers and arrival times, as the event source mapping would
deliver them. ``handler`` applies them (with redeliveries and a failure in the middle of
a flush) into one table and queue; the embedded runner reads the same stream into
another. Partial rows, progress, final rows, top keys and dead letters must be equal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from shardflow.resources import ResourceNames, ResourceReport, ensure_queue, ensure_table
from shardflow.wiring import make_runner, stream_identity
from streams import lambda_handler
from streams.lambda_progress import DynamoShardClaims
from streams.runner import RunnerOptions
from streams.shard_map import list_all_shards
from tests.conftest import AwsEnv
from tests.lambda_events import NAMES, SHARD_OF, kinesis_records, load, rewritten
from tests.oracle import drain_queue

pytestmark = pytest.mark.emulator

OK: dict[str, list[dict[str, str]]] = {"batchItemFailures": []}


def shards_of(aws: AwsEnv) -> list[dict[str, Any]]:
    return sorted(
        list_all_shards(aws.clients.kinesis, aws.settings.stream), key=lambda s: s["ShardId"]
    )


def read_shard(aws: AwsEnv, shard_id: str) -> list[dict[str, Any]]:
    kinesis = aws.clients.kinesis
    iterator = kinesis.get_shard_iterator(
        StreamName=aws.settings.stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    while True:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        records.extend(response["Records"])
        if not response["Records"] and not response.get("MillisBehindLatest"):
            return records
        iterator = response["NextShardIterator"]


def put_fixtures(aws: AwsEnv, names: tuple[str, ...] = NAMES) -> dict[str, dict[str, Any]]:
    """Put the fixtures' records on their shards; the events as the ESM would give them."""
    shards = shards_of(aws)
    for name in names:
        hash_key = shards[SHARD_OF[name]]["HashKeyRange"]["StartingHashKey"]
        for key, data in kinesis_records(load(name)):
            aws.clients.kinesis.put_record(
                StreamName=aws.settings.stream,
                PartitionKey=key,
                Data=data,
                ExplicitHashKey=hash_key,
            )
    arn = aws.clients.kinesis.describe_stream_summary(StreamName=aws.settings.stream)[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    stored = {shard["ShardId"]: read_shard(aws, shard["ShardId"]) for shard in shards}
    events = {}
    for name in reversed(names):  # what was put just now is at the end of each shard
        shard_id = shards[SHARD_OF[name]]["ShardId"]
        count = len(load(name)["Records"])
        events[name] = rewritten(load(name), arn, shard_id, stored[shard_id][-count:])
        stored[shard_id] = stored[shard_id][:-count]
    return events


def set_lambda_env(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the handler's environment, as the template sets it, to ``aws``'s resources,
    and forget the container built for an earlier one."""
    for name, value in aws.env.items():
        if name.startswith(("AWS_", "SHARDFLOW_")):
            monkeypatch.setenv(name, value)
    lambda_handler.reset()


@pytest.fixture
def lambda_env(aws: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEnv]:
    """The handler's environment, as the template sets it, pointing at the emulator."""
    set_lambda_env(aws, monkeypatch)
    yield aws
    lambda_handler.reset()


def items(aws: AwsEnv, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item, less the attributes that differ by design: wall-clock times
    (``expires_at``), the Lambda runner's fences, and ``horizon`` (bookkeeping that
    depends on how records fell into flushes, not on what is stored)."""
    skip = {"expires_at", "lambda_touch", "touched_ms", "quiet_since_ms", "horizon"}
    found = {}
    for page in aws.clients.dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            found[(item["pk"]["S"], item["sk"]["S"])] = {
                name: value for name, value in item.items() if name not in skip
            }
    return found


def letters(aws: AwsEnv, queue_url: str) -> list[str]:
    return sorted(
        json.dumps(body, sort_keys=True) for body in drain_queue(aws.clients.sqs, queue_url)
    )


def embedded_run(aws: AwsEnv) -> tuple[str, str]:
    """The embedded runner over the same stream, into a table and queue of its own."""
    names = ResourceNames(
        stream=aws.settings.stream,
        table=f"{aws.settings.table}-embedded",
        dead_letter_queue=f"{aws.settings.dead_letter_queue}-embedded",
        alert_topic=aws.settings.alert_topic,
        other_streams=(),
    )
    report = ResourceReport()
    ensure_table(aws.clients.dynamodb, names, report)
    ensure_queue(aws.clients.sqs, names, report)
    settings = replace(aws.settings, table=names.table, dead_letter_queue=names.dead_letter_queue)
    options = RunnerOptions(
        flush_interval=0.2, poll_interval=0.05, idle_poll_interval=0.1, finalize_interval=0.5
    )
    make_runner(aws.clients, settings, [PAGE_VIEWS], options).run(until_idle=1.5)
    return names.table, report.queue_url


def test_lambda_stores_what_the_embedded_runner_stores(
    lambda_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = lambda_env
    events = put_fixtures(aws)
    handler = lambda_handler.handler

    assert handler(events["plain"], None) == OK
    assert handler(events["kpl"], None) == OK
    assert handler(events["kpl"], None) == OK  # redelivered

    # A flush that fails after its first row: Lambda is told to retry from the batch's
    # first record, and the retry stores what one clean pass stores.
    write_rows = DynamoPartialStore.write_rows
    failures = []

    def fail_once(store: DynamoPartialStore, rows: Any) -> None:
        if not failures:
            failures.append(rows)
            write_rows(store, rows[:1])
            raise ConnectionError("dropped in the middle of the rows")
        write_rows(store, rows)

    monkeypatch.setattr(DynamoPartialStore, "write_rows", fail_once)
    first = events["malformed_late"]["Records"][0]["kinesis"]["sequenceNumber"]
    assert handler(events["malformed_late"], None) == {
        "batchItemFailures": [{"itemIdentifier": first}]
    }
    assert handler(events["malformed_late"], None) == OK
    assert handler(events["plain"], None) == OK  # an old batch again

    summary = lambda_handler.finalize_handler({}, None)
    assert summary["page-views"]["final_rows"] > 0, summary
    assert summary["page-views"]["error"] is None

    table, queue = embedded_run(aws)
    ours, theirs = items(aws, aws.settings.table), items(aws, table)
    assert any(pk.startswith("final#") for pk, _ in ours)
    assert any(pk.startswith("row#") for pk, _ in ours)
    assert ours == theirs
    sent = letters(aws, aws.queue_url)
    assert sent == letters(aws, queue)
    assert len(sent) == 5  # four invalid, one late: each sent once


def test_the_finalizer_marks_quiet_shards_idle_and_the_handler_wakes_them(
    lambda_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = lambda_env
    events = put_fixtures(aws, ("plain",))
    handler = lambda_handler.handler
    assert handler(events["plain"], None) == OK  # shard 0 only; shard 1 never sends

    clock = [time.time() + 10]
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    claims = DynamoShardClaims(aws.clients.dynamodb, aws.settings.table)
    finalize = lambda_handler._container().finalize_pass()
    monkeypatch.setattr(finalize, "_wall_clock", lambda: clock[0])
    shard0, shard1 = (s["ShardId"] for s in shards_of(aws))

    outcome = finalize.run()  # shard 0 sent 10 s ago; shard 1 (never sent) is noted quiet
    assert outcome.marks["page-views"].idle == []
    assert outcome.finals["page-views"].final_rows == 0  # shard 1 holds every window
    seen = {s.progress.shard_id: s for s in claims.observe("page-views")}
    assert seen[shard1].quiet_since_ms is not None and seen[shard0].quiet_since_ms is None

    clock[0] += 120
    outcome = finalize.run()
    assert sorted(outcome.marks["page-views"].idle) == [shard0, shard1]
    assert outcome.finals["page-views"].final_rows > 0  # every shard idle: all read
    frontier = max(
        p.watermark(PAGE_VIEWS.allowed_lateness_ms) or 0 for p in store.read_progress("page-views")
    )

    # Shard 0 sends again: the handler finds it idle, wakes it at the frontier, applies.
    events.update(put_fixtures(aws, ("malformed_late",)))
    assert handler(events["malformed_late"], None) == OK
    woken = {p.shard_id: p for p in store.read_progress("page-views")}[shard0]
    assert woken.idle_since_ms is None and woken.watermark_floor == frontier
    assert woken.checkpoint is not None
    assert (
        woken.checkpoint.sequence_number
        == (events["malformed_late"]["Records"][-1]["kinesis"]["sequenceNumber"])
    )


def test_a_mark_loses_to_a_touch_after_its_read(lambda_env: AwsEnv) -> None:
    aws = lambda_env
    events = put_fixtures(aws, ("plain",))
    assert lambda_handler.handler(events["plain"], None) == OK
    claims = DynamoShardClaims(aws.clients.dynamodb, aws.settings.table)
    shard0 = shards_of(aws)[0]["ShardId"]
    seen = next(s for s in claims.observe("page-views") if s.progress.shard_id == shard0)
    identity = stream_identity(aws.clients, aws.settings.stream)
    assert claims.touch("page-views", identity, shard0, "later", int(time.time() * 1000))
    assert not claims.mark_idle("page-views", seen, int(time.time() * 1000))
    assert not claims.note_quiet("page-views", seen, int(time.time() * 1000))
    fresh = next(s for s in claims.observe("page-views") if s.progress.shard_id == shard0)
    assert claims.mark_idle("page-views", fresh, int(time.time() * 1000))
    # Marked idle: a touch fails, so the handler wakes the shard before applying.
    assert claims.touch("page-views", identity, shard0, "again", int(time.time() * 1000)) is None
    assert claims.touch("page-views", "another stream", shard0, "x", 0) is None
