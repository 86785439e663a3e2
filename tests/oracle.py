"""An independent computation of what page-views must store, written from design.md
sections 3 and 8 with the standard library only (it shares no code with shardflow).

It reads the stream's records back, shard by shard in order, and applies the rules:
validate the event; 60 s tumbling windows on event time; per shard, an event is late when
its window ends at or before (max event time seen earlier on that shard - 10 s); a window is
final when every shard's watermark has reached its end.

``latency_p99`` and ``unique_users`` are computed exactly here; the pipeline stores sketches
(design.md section 3: approximate quantiles and distinct counts), so :func:`assert_matches`
holds those two to the error the sketches document, and everything else to equality.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

WINDOW_MS = 60_000
LATENESS_MS = 10_000

P99 = 0.99
P99_RELATIVE_ACCURACY = 0.01
"""page-views' latency_p99 sketch reads back a value within 1% (relative) of the true value
at the quantile's rank (see :func:`exact_quantile`)."""
ZERO_MAGNITUDE = 1e-9
"""The quantile sketch counts values of at most this magnitude as 0: the absolute slack."""

HLL_REGISTERS = 2**12
DISTINCT_STANDARD_ERROR = 1.04 / math.sqrt(HLL_REGISTERS)  # 1.6%: HyperLogLog, precision 12
DISTINCT_SIGMAS = 4
DISTINCT_COLLISION_SLACK = 3
"""Four standard errors (6.5%) leave a false alarm about once in 16,000 windows with large
counts (the HyperLogLog error is near normal); up to a few thousand users, linear counting
is more precise than that. But it is discrete: for a few dozen users the estimate moves only
when two of them hash to one register, by one user per collision, and k collisions happen
about as often as a Poisson(n**2 / 8192) count reaches k; three users of slack keep that
below one in a million windows. A real bug (users lost, counted per event, or not merged
across shards) is off by far more."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def event_time(event: dict[str, Any]) -> int | None:
    ts = event.get("ts")
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        ms = ts
    elif isinstance(ts, float) and ts.is_integer():
        ms = int(ts)
    elif isinstance(ts, str):
        text = ts.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)  # noqa: UP017
        delta = moment - epoch
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    else:
        return None
    return ms if 0 <= ms <= 9_999_999_999_999 else None


def parse_valid(data: bytes) -> dict[str, Any] | None:
    """The event if it meets the page-views contract, else None."""
    try:
        event = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    if "ts" not in event or event_time(event) is None:
        return None
    if not isinstance(event.get("page"), str) or not event["page"]:
        return None
    if event.get("user_id") is not None and not isinstance(event["user_id"], str):
        return None
    for name in ("latency_ms", "value"):
        if event.get(name) is not None and not _is_number(event[name]):
            return None
    if event.get("latency_ms") is not None and event["latency_ms"] < 0:
        return None
    return event


@dataclass
class Expected:
    windows: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    invalid: set[tuple[str, str, int]] = field(default_factory=set)
    late: set[tuple[str, str, int]] = field(default_factory=set)
    max_ts: dict[str, int | None] = field(default_factory=dict)

    def final(self, window_start: int) -> bool:
        end = window_start + WINDOW_MS
        return bool(self.max_ts) and all(
            ts is not None and ts - LATENESS_MS >= end for ts in self.max_ts.values()
        )


def compute(shards: Mapping[str, Sequence[tuple[Any, ...]]]) -> Expected:
    """``shards``: shard id -> [(sequence number, data)] in shard order, or
    [(sequence number, sub-sequence number, data)] for user records of KPL aggregates.

    Sums are added per shard in shard order, then the shards' sums in shard-id order: the
    order a float sum takes when partial rows are merged, so results compare exactly.
    """
    expected = Expected()
    revenue: dict[tuple[str, int], dict[str, float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    users: dict[tuple[str, int], set[str]] = {}
    for shard_id, records in sorted(shards.items()):
        max_ts: int | None = None
        for item in records:
            sequence, sub, data = item if len(item) == 3 else (item[0], 0, item[1])
            ident = (shard_id, sequence, sub)
            event = parse_valid(data)
            if event is None:
                expected.invalid.add(ident)
                continue
            ts = event_time(event)
            assert ts is not None
            start = ts - ts % WINDOW_MS
            if max_ts is not None and start + WINDOW_MS <= max_ts - LATENESS_MS:
                expected.late.add(ident)
                continue
            max_ts = ts if max_ts is None else max(max_ts, ts)
            window = expected.windows.setdefault(
                (event["page"], start),
                {
                    "views": 0,
                    "revenue": 0.0,
                    "latency_min": None,
                    "latency_max": None,
                    "latency_p99": None,
                    "unique_users": 0,
                },
            )
            window["views"] += 1
            if event.get("user_id") is not None:
                users.setdefault((event["page"], start), set()).add(event["user_id"])
            shard_sums = revenue.setdefault((event["page"], start), {})
            shard_sums.setdefault(shard_id, 0)
            if event.get("value") is not None:
                shard_sums[shard_id] += event["value"]
            latency = event.get("latency_ms")
            if latency is not None:
                latencies.setdefault((event["page"], start), []).append(latency)
                low, high = window["latency_min"], window["latency_max"]
                window["latency_min"] = latency if low is None else min(low, latency)
                window["latency_max"] = latency if high is None else max(high, latency)
        expected.max_ts[shard_id] = max_ts
    for slot, by_shard in revenue.items():
        total = None
        for _, partial in sorted(by_shard.items()):
            total = partial if total is None else total + partial
        expected.windows[slot]["revenue"] = total
    for slot, values in latencies.items():
        expected.windows[slot]["latency_p99"] = exact_quantile(values, P99)
    for slot, distinct in users.items():
        expected.windows[slot]["unique_users"] = len(distinct)
    return expected


def exact_quantile(values: Sequence[float], quantile: float) -> float | None:
    """The ``quantile`` of ``values`` by the rank convention ApproxQuantile documents: the
    value at 0-based rank ``floor(quantile * (n - 1))`` of the sorted values (no
    interpolation), so the 0.99 quantile of 10 values is the 9th smallest. None without
    values."""
    if not values:
        return None
    return sorted(values)[math.floor(quantile * (len(values) - 1))]


def quantile_within_bounds(
    estimate: float | None, exact: float | None, relative_accuracy: float = P99_RELATIVE_ACCURACY
) -> bool:
    """The sketch's promise: within ``relative_accuracy`` of the true value at the rank."""
    if exact is None or estimate is None:
        return estimate is None and exact is None
    slack = relative_accuracy * abs(exact) * (1 + 1e-12) + ZERO_MAGNITUDE
    return abs(estimate - exact) <= slack


def distinct_tolerance(true_count: int) -> float:
    """How far a precision-12 HyperLogLog estimate of ``true_count`` may be off: four
    standard errors (6.5%) plus :data:`DISTINCT_COLLISION_SLACK`."""
    return DISTINCT_SIGMAS * DISTINCT_STANDARD_ERROR * true_count + DISTINCT_COLLISION_SLACK


def distinct_within_bounds(estimate: int, true_count: int) -> bool:
    if true_count == 0:
        return estimate == 0  # an empty sketch is exactly 0
    return isinstance(estimate, int) and abs(estimate - true_count) <= distinct_tolerance(
        true_count
    )


def read_stream(kinesis: Any, stream: str) -> dict[str, list[tuple[str, bytes]]]:
    """Every record of every shard, in shard order, straight from Kinesis."""
    shards: dict[str, list[tuple[str, bytes]]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[tuple[str, bytes]] = []
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            records.extend((r["SequenceNumber"], r["Data"]) for r in response["Records"])
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
        shards[shard_id] = records
    return shards


def drain_queue(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message body in the queue (received, not deleted)."""
    bodies: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=0
        )
        messages = response.get("Messages", [])
        empty = 0 if messages else empty + 1
        bodies.extend(json.loads(m["Body"]) for m in messages)
    return bodies


def assert_matches(stored: list[dict[str, Any]], expected: Expected) -> None:
    """Stored windows (query --format json) equal the expected ones exactly, sums included,
    with the same final flags; the two sketches are within their documented error."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)  # noqa: UP017
    got = {}
    for row in stored:
        start = datetime.fromisoformat(row["window_start"].replace("Z", "+00:00")) - epoch
        got[(row["key"], int(start.total_seconds() * 1000))] = row
    assert sorted(got) == sorted(expected.windows), "different (key, window) sets"
    for slot, want in expected.windows.items():
        row = got[slot]
        assert row["views"] == want["views"], (slot, row, want)
        assert row["latency_min"] == want["latency_min"], (slot, row, want)
        assert row["latency_max"] == want["latency_max"], (slot, row, want)
        assert row["revenue"] == want["revenue"], (slot, row, want)
        assert quantile_within_bounds(row["latency_p99"], want["latency_p99"]), (slot, row, want)
        assert distinct_within_bounds(row["unique_users"], want["unique_users"]), (slot, row, want)
        assert row["final"] == expected.final(slot[1]), (slot, row)


def dead_letter_ids(bodies: list[dict[str, Any]], reason: str) -> set[tuple[str, str, int]]:
    return {
        (b["shard_id"], b["sequence_number"], b["sub_sequence_number"])
        for b in bodies
        if b["reason"] == reason
    }
