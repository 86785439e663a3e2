"""Resharding on kinesis-local, for the tests of every runner: split and merge the stream,
read its lineage, generate events that continue across a reshard, what the oracle
expects once some shards have been closed and read to their end, and the checks of the
results (:func:`check_results`, :func:`check_finals`) that the embedded runner's test and
the Lambda runner's test share.

Lateness across a reshard. A child shard starts with a watermark floor: what was final
when its parent ended (never above the parent's own watermark). tests/oracle.py knows
nothing of floors: a shard's first event is never late there. The two agree as long as a
child's first events are on time, so every phase after a reshard opens with a *lead* of
events without late ones (events' jitter, 3 s, is well within the allowed lateness, 10 s,
so an on-time event is on time under any floor). Late events then follow as usual, and
both decide them alike.

Final windows across a reshard. A shard that was closed and read to its end holds nothing
open, so a window is final when it is closed on every shard still open (the leaves of the
lineage): :func:`expected_with_lineage` gives the oracle that rule.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.windowing.engine import ShardProgress
from processors.windowing.results import merge_rows
from tests.conftest import AwsEnv
from tests.integration.events import BASE_MS, MALFORMED, PAGES
from tests.integration.rerun import assert_same_as_clean_run
from tests.integration.test_end_to_end import shardflow
from tests.oracle import (
    LATENESS_MS,
    Expected,
    assert_matches,
    compute,
    dead_letter_ids,
    drain_queue,
    read_stream,
)

STEP_MS = 200
"""Event time between two consecutive events (before jitter)."""
JITTER_MS = 3_000
LATE_BY_MS = 180_000


def phase_lines(first: int, count: int, seed: int, lead: int = 0) -> list[bytes]:
    """Events ``first`` to ``first + count - 1`` of one continuing sequence: event time
    ``STEP_MS`` apart (jitter within the lateness), 2% malformed, 2% stamped three minutes
    back (none among the first ``lead``), 10% ISO timestamps."""
    rng = random.Random(seed * 1_000_003 + first)
    lines: list[bytes] = []
    for index in range(first, first + count):
        roll = rng.random()
        if roll < 0.02:
            lines.append(rng.choice(MALFORMED))
            continue
        ts = BASE_MS + index * STEP_MS + rng.randrange(-JITTER_MS, JITTER_MS)
        if roll < 0.04 and index - first >= lead:
            ts -= LATE_BY_MS
        event: dict[str, object] = {
            "event_id": f"{seed}-{index}",
            "ts": ts,
            "user_id": f"u{rng.randrange(300)}",
            "page": rng.choice(PAGES),
        }
        if rng.random() < 0.1:
            iso = datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat()
            event["ts"] = iso.replace("+00:00", "Z")
        if rng.random() < 0.9:
            event["latency_ms"] = round(rng.uniform(1, 900), 1)
        if rng.random() < 0.3:
            event["value"] = round(rng.uniform(0.5, 250), 2)
        lines.append(json.dumps(event).encode())
    return lines


# -- the stream's shards --------------------------------------------------------------


def list_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard of ``stream``, closed ones included, in shard-id order."""
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        response = kinesis.list_shards(**kwargs)
        shards.extend(response["Shards"])
        token = response.get("NextToken")
        if not token:
            return sorted(shards, key=lambda shard: str(shard["ShardId"]))
        kwargs = {"NextToken": token}


def is_open(shard: Mapping[str, Any]) -> bool:
    return "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})


def open_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """The open shards, in hash key order."""
    shards = [shard for shard in list_shards(kinesis, stream) if is_open(shard)]
    return sorted(shards, key=lambda shard: int(shard["HashKeyRange"]["StartingHashKey"]))


def parents_of(shards: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Child shard id -> its parents (one after a split, two after a merge)."""
    lineage: dict[str, tuple[str, ...]] = {}
    for shard in shards:
        parents = tuple(
            parent
            for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
            if parent
        )
        if parents:
            lineage[str(shard["ShardId"])] = parents
    return lineage


def wait_active(kinesis: Any, stream: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {stream} still {summary['StreamStatus']}")
        time.sleep(0.1)


def split_in_half(kinesis: Any, stream: str, shard_id: str) -> None:
    """Split an open shard at the middle of its hash key range, and wait for ACTIVE."""
    shard = next(s for s in list_shards(kinesis, stream) if s["ShardId"] == shard_id)
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    middle = low + (high - low + 1) // 2
    kinesis.split_shard(StreamName=stream, ShardToSplit=shard_id, NewStartingHashKey=str(middle))
    wait_active(kinesis, stream)


def merge_adjacent(kinesis: Any, stream: str, lower: str, upper: str) -> None:
    """Merge two open shards whose hash key ranges touch, and wait for ACTIVE."""
    shards = {s["ShardId"]: s for s in open_shards(kinesis, stream)}
    end = int(shards[lower]["HashKeyRange"]["EndingHashKey"])
    start = int(shards[upper]["HashKeyRange"]["StartingHashKey"])
    assert end + 1 == start, f"{lower} and {upper} are not adjacent"
    kinesis.merge_shards(StreamName=stream, ShardToMerge=lower, AdjacentShardToMerge=upper)
    wait_active(kinesis, stream)


# -- what must come out ---------------------------------------------------------------


def expected_with_lineage(
    records: Mapping[str, Sequence[tuple[Any, ...]]], shards: Sequence[Mapping[str, Any]]
) -> Expected:
    """tests/oracle.py's computation over every shard, parents included, with finality
    decided by the shards still open: closed shards, read to their end, hold nothing."""
    expected = compute(records)
    still_open = {str(shard["ShardId"]) for shard in shards if is_open(shard)}
    expected.max_ts = {shard: ts for shard, ts in expected.max_ts.items() if shard in still_open}
    return expected


def check_lineage_progress(
    progress: Sequence[ShardProgress], shards: Sequence[Mapping[str, Any]]
) -> None:
    """The stored progress after a reshard: every closed shard ended; every shard open
    still, not; every child registered with a watermark floor at or below each of its
    parents' final watermark (it cannot make a final window open again, nor hold back
    what its parents had closed)."""
    by_id = {p.shard_id: p for p in progress}
    listed = {str(shard["ShardId"]) for shard in shards}
    assert set(by_id) == listed, "every shard has progress, and only those"
    for shard in shards:
        state = by_id[str(shard["ShardId"])]
        assert state.ended == (not is_open(shard)), state
    for child, parents in parents_of(shards).items():
        floor = by_id[child].watermark_floor
        assert floor is not None, f"{child} was registered without a watermark floor"
        for parent in parents:
            watermark = by_id[parent].watermark(LATENESS_MS)
            assert watermark is not None and floor <= watermark, (child, floor, parent, watermark)


def check_parents_first(
    timeline: Sequence[tuple[str, str, bool]], shards: Sequence[Mapping[str, Any]]
) -> None:
    """``timeline``: ("iterator", shard, _) when a shard's reading began, ("rows", shard, _)
    before rows were written for it, ("progress", shard, ended) once its progress was
    durable, in the order they happened. Each child's reading began, and its rows were
    written, only after every parent's end was durable; no parent wrote rows after it."""
    ended_at: dict[str, int] = {}
    for index, (kind, shard, ended) in enumerate(timeline):
        if kind == "progress" and ended:
            ended_at.setdefault(shard, index)
    for child, parents in parents_of(shards).items():
        began = [i for i, (kind, shard, _) in enumerate(timeline) if shard == child]
        assert began, f"{child} was never read"
        for parent in parents:
            assert parent in ended_at, f"{parent} was never recorded as ended"
            assert began[0] > ended_at[parent], (
                f"{child} was read or written before its parent {parent} ended"
            )
            after = [
                kind
                for kind, shard, _ in timeline[ended_at[parent] + 1 :]
                if shard == parent and kind == "rows"
            ]
            assert not after, f"{parent} wrote rows after its end"


def check_results(
    aws: AwsEnv, count: int, shards: Sequence[dict[str, Any]]
) -> tuple[Expected, list[dict[str, Any]]]:
    """The query equals the oracle (lineage-aware) and a clean run; the dead-letter queue
    holds exactly the invalid and late events, each letter identical if repeated."""
    stored = json.loads(shardflow(aws, "query", "page-views", "--format", "json"))
    records = read_stream(aws.clients.kinesis, aws.settings.stream)
    assert set(records) == {shard["ShardId"] for shard in shards}
    assert sum(len(each) for each in records.values()) == count, "lost or repeated in Kinesis"
    expected = expected_with_lineage(records, shards)
    assert expected.invalid and expected.late, "the data set must exercise both reasons"
    assert_matches(stored, expected)  # the sketches within their error bounds
    assert_same_as_clean_run(stored, records)  # and all six exactly as one clean run
    assert any(row["final"] for row in stored) and not all(row["final"] for row in stored)

    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert dead_letter_ids(letters, "invalid") == expected.invalid
    assert dead_letter_ids(letters, "late") == expected.late
    by_id: dict[str, dict[str, Any]] = {}
    for letter in letters:
        assert by_id.setdefault(str(letter["dead_letter_id"]), letter) == letter
    return expected, stored


def check_finals(
    store: DynamoPartialStore, expected: Expected, shards: Sequence[dict[str, Any]]
) -> None:
    """One final row for each window final across the reshards, equal to the merge of its
    partial rows, parents' rows included."""
    progress = store.read_progress(PAGE_VIEWS.name)
    rows = store.read_rows(PAGE_VIEWS.name)
    finals = store.read_finals(PAGE_VIEWS.name)
    got = {(r.key, r.window_start_ms): r.values for r in finals}
    assert set(got) == {slot for slot in expected.windows if expected.final(slot[1])}
    merged = [r for r in merge_rows(PAGE_VIEWS, rows, progress) if r.final]
    assert got == {(r.key, r.window.start_ms): orjson.loads(orjson.dumps(r.values)) for r in merged}
    contributors: dict[tuple[str, int], set[str]] = defaultdict(set)
    for row in rows:
        contributors[(row.key, row.window.start_ms)].add(row.shard_id)
    for child, parents in parents_of(shards).items():
        assert any(
            child in contributors[slot] and set(parents) & contributors[slot] for slot in got
        ), f"no final window holds rows of both {child} and its parents {parents}"
