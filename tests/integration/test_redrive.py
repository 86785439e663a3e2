"""`shardflow dead-letters --redrive` on the emulator: after a schema fix, the invalid
events come back through their pipeline and are counted exactly once, even when a redrive
that died is run again; another pipeline reading the same stream does not count them a
second time; what is still invalid, or whose window is already final, stays."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace
from operator import itemgetter
from typing import Any

import orjson
import pytest

from processors.pipeline import AggregateSpec, Pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.windowing.aggregators import Count
from processors.windowing.windows import TumblingWindows
from schemas.errors import InvalidEvent
from schemas.page_views import PageView, decode_page_view
from shardflow.dead_letter_list import list_dead_letters
from shardflow.redrive import redrive
from shardflow.redrive_ledger import NEW, SENDING, SENT, DynamoRedriveLedger
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import placement_loader
from shardflow.wiring import make_runner, make_store
from streams.kinesis_producer import KinesisProducer
from streams.shard_map import ShardMap, hash_key_of, list_all_shards
from tests.conftest import AwsEnv

pytestmark = pytest.mark.emulator

DAY_MS = 86_400_000


def decode_with_default_page(data: bytes) -> PageView:
    """page-views' schema, fixed: an event without a page counts under "/unknown"."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if isinstance(event, dict) and "page" not in event:
        data = orjson.dumps({**event, "page": "/unknown"})
    return decode_page_view(data)


# The same pipeline (same name, windows and aggregates), with the fix: with page-views' own
# lateness (10 s), and with a long one that keeps the windows open.
FIXED_NOW: Pipeline[PageView] = replace(PAGE_VIEWS, decode=decode_with_default_page)
FIXED: Pipeline[PageView] = replace(FIXED_NOW, allowed_lateness_ms=DAY_MS)


def decode_any(data: bytes) -> tuple[int]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if not isinstance(event, dict) or type(event.get("ts")) is not int:
        raise InvalidEvent("ts is required")
    return (event["ts"],)


# A second pipeline on the same stream that accepts the events page-views rejects.
ALL_EVENTS: Pipeline[tuple[int]] = Pipeline(
    name="all-events",
    description="every event with a time",
    decode=decode_any,
    key=lambda event: "all",
    event_time=itemgetter(0),
    windows=TumblingWindows(size_ms=60_000),
    allowed_lateness_ms=DAY_MS,
    aggregates=(AggregateSpec("events", Count()),),
)


def run_pipelines(aws: AwsEnv, *pipelines: Pipeline[Any]) -> None:
    runner = make_runner(aws.clients, aws.settings, list(pipelines))
    runner.run(threading.Event(), until_idle=1.0)


def counts(aws: AwsEnv, pipeline: Pipeline[Any], column: str) -> dict[str, int]:
    store = make_store(aws.clients, aws.settings, pipeline)
    out: dict[str, int] = {}
    for result in query_windows(store, pipeline):
        out[result.key] = out.get(result.key, 0) + result.values[column]
    return out


def letters(aws: AwsEnv) -> list[tuple[str, str]]:
    listed = list_dead_letters(aws.clients.sqs, aws.queue_url, limit=1000)
    return sorted((letter.body["pipeline"], letter.body["reason"]) for letter in listed)


class CrashBeforeMarking(DynamoRedriveLedger):
    """The redrive dies between its puts and their marks: the claims stay ``sending``."""

    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        raise KeyboardInterrupt


def current_event_on_each_shard(aws: AwsEnv, now_ms: int) -> None:
    """A page view of now on every shard: their watermarks move past the old window."""
    shard_map = ShardMap.from_shards(list_all_shards(aws.clients.kinesis, aws.settings.stream))
    for shard_id in shard_map.shard_ids:
        key = next(
            f"k{n}" for n in range(10_000) if shard_map.shard_for(hash_key_of(f"k{n}")) == shard_id
        )
        event = {"event_id": f"now-{shard_id}", "ts": now_ms, "page": "/now"}
        aws.clients.kinesis.put_record(
            StreamName=aws.settings.stream, Data=orjson.dumps(event), PartitionKey=key
        )


def redrive_with(
    aws: AwsEnv, pipeline: Pipeline[Any], ledger: DynamoRedriveLedger
) -> RedriveReport:
    store = make_store(aws.clients, aws.settings, pipeline)
    where = placement_loader(aws.clients.kinesis, aws.settings.stream, store, pipeline)
    with KinesisProducer(aws.clients.kinesis, aws.settings.stream) as producer:
        return redrive(aws.clients.sqs, aws.queue_url, pipeline, producer, ledger, where)


@pytest.mark.slow
def test_redrive_recovers_events_a_fixed_schema_accepts_exactly_once(aws: AwsEnv) -> None:
    # One window that started two minutes ago: open on every shard, while the shards have
    # seen nothing later.
    now = int(time.time() * 1000)
    start = (now // 60_000 - 2) * 60_000
    good = [{"event_id": f"g{n}", "ts": start + 1000 + n, "page": f"/p{n % 2}"} for n in range(20)]
    pageless = [{"event_id": f"x{n}", "ts": start + 2000 + n} for n in range(6)]
    lines = [orjson.dumps(event) for event in good + pageless] + [b"{not json"]
    produced = subprocess.run(
        [*aws.cli(), "produce", "-"],
        input=b"\n".join(lines) + b"\n",
        env=aws.env,
        capture_output=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr.decode()

    run_pipelines(aws, PAGE_VIEWS, ALL_EVENTS)
    assert counts(aws, PAGE_VIEWS, "views") == {"/p0": 10, "/p1": 10}
    assert counts(aws, ALL_EVENTS, "events") == {"all": 26}
    assert letters(aws) == [("all-events", "invalid")] + [("page-views", "invalid")] * 7

    # Events of now on every shard: with page-views' own 10 s of lateness the old window
    # is final everywhere, so the fixed events would come back late: they stay.
    current_event_on_each_shard(aws, now)
    run_pipelines(aws, PAGE_VIEWS, ALL_EVENTS)
    ledger = DynamoRedriveLedger(aws.clients.dynamodb, aws.settings.table, "page-views")
    short = redrive_with(aws, FIXED_NOW, ledger)
    assert (short.sent, len(short.final), len(short.still_invalid)) == (0, 6, 1), short.lines()
    assert all("window already final (would come back late)" in why for _, why in short.final)
    assert short.exit_code == 1
    assert letters(aws) == [("all-events", "invalid")] + [("page-views", "invalid")] * 7

    # With a lateness that keeps the window open: the redrive dies after its puts (all six
    # in one batch), before marking any of them sent...
    crashing = CrashBeforeMarking(aws.clients.dynamodb, aws.settings.table, "page-views")
    with pytest.raises(KeyboardInterrupt):
        redrive_with(aws, FIXED, crashing)
    # ... and the next run sends all six again.
    report = redrive_with(aws, FIXED, ledger)
    assert (report.sent, report.resent, report.skipped, report.left) == (6, 6, 1, 1), report.lines()
    assert "malformed JSON" in report.still_invalid[0][1]
    # Sent letters are gone; the rest is still there, visible at once.
    assert letters(aws) == [("all-events", "invalid"), ("page-views", "invalid")]

    run_pipelines(aws, FIXED, ALL_EVENTS)
    # Twelve envelopes in the stream, six letters: each counted once.
    assert counts(aws, PAGE_VIEWS, "views") == {"/p0": 10, "/p1": 10, "/now": 2, "/unknown": 6}
    assert counts(aws, ALL_EVENTS, "events") == {"all": 28}  # not counted twice
    assert letters(aws) == [("all-events", "invalid"), ("page-views", "invalid")]

    # Again: nothing more to send, nothing counted twice.
    again = redrive_with(aws, FIXED, ledger)
    assert (again.sent, again.already_sent, len(again.still_invalid)) == (0, 0, 1)

    # The command line, with the shipped (unfixed) page-views: still invalid, exit 1.
    done = subprocess.run(
        [*aws.cli(), "dead-letters", "--redrive"],
        env=aws.env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr.decode()
    out = done.stdout.decode()
    assert "sent back         0" in out and "still invalid     1" in out
    assert "windows are still open" in out
    refused = subprocess.run(
        [*aws.cli(), "dead-letters", "--redrive", "--reason", "late"],
        env=aws.env,
        capture_output=True,
        timeout=120,
    )
    assert refused.returncode == 2 and b"final windows never change" in refused.stderr
    assert letters(aws) == [("all-events", "invalid"), ("page-views", "invalid")]


def test_the_dynamodb_ledger_claims_once_and_remembers_what_was_sent(aws: AwsEnv) -> None:
    ledger = DynamoRedriveLedger(aws.clients.dynamodb, aws.settings.table, "page-views")
    assert ledger.state("page-views:s:1:0") is None
    assert ledger.claim("page-views:s:1:0") == NEW
    assert ledger.claim("page-views:s:1:0") == SENDING
    assert ledger.state("page-views:s:1:0") == SENDING
    ledger.release("page-views:s:1:0")
    assert ledger.claim("page-views:s:1:0") == NEW
    ledger.mark_sent("page-views:s:1:0", "shardId-000000000001", "4960")
    ledger.release("page-views:s:1:0")  # a sent letter stays sent
    assert ledger.claim("page-views:s:1:0") == SENT
    assert ledger.state("page-views:s:1:0") == SENT
    other = DynamoRedriveLedger(aws.clients.dynamodb, aws.settings.table, "all-events")
    assert other.claim("page-views:s:1:0") == NEW  # each pipeline has its own ledger
    item = aws.clients.dynamodb.get_item(
        TableName=aws.settings.table,
        Key={"pk": {"S": "redrive#page-views"}, "sk": {"S": "page-views:s:1:0"}},
        ConsistentRead=True,
    )["Item"]
    assert item["state"]["S"] == SENT and item["sequence_number"]["S"] == "4960"
