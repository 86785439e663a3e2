"""The Lambda fixture events (tests/fixtures/lambda/*.json): how they are made, and how
the tests load them and point them at a stream of their own.

Each file is one Kinesis event source mapping batch in the shape AWS documents (Lambda
developer guide, "Using AWS Lambda with Amazon Kinesis": ``Records[].kinesis`` with
``kinesisSchemaVersion``, ``partitionKey``, ``sequenceNumber``, base64 ``data`` and
``approximateArrivalTimestamp`` in epoch seconds; ``eventSource``, ``eventVersion``,
``eventID`` = ``<shard id>:<sequence number>``, ``eventName``, ``invokeIdentityArn``,
``awsRegion``, ``eventSourceARN``). The JSON is checked in; this module made it:

    .venv/bin/python -m tests.lambda_events      # writes the files again, byte for byte

and ``tests/unit/test_lambda_handler.py`` checks that it still does. KPL aggregates are
built with ``streams.kpl.AggregateBuilder``, which is cross-checked against
aws-kinesis-agg in ``tests/unit/test_kpl_interop.py``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.kpl import MAGIC, AggregateBuilder, UserRecord

FIXTURES = Path(__file__).parent / "fixtures" / "lambda"
NAMES = ("plain", "kpl", "malformed_late")
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/clickstream"
ROLE = "arn:aws:iam::123456789012:role/shardflow-processor"
BASE_MS = int(datetime(2026, 6, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)
SHARD_OF = {"plain": 0, "kpl": 1, "malformed_late": 0}
_SEQUENCE_BASE = 49_654_321 * 10**48 + 2  # 56 digits, as Kinesis sequence numbers have
PAGES = ("/home", "/cart", "/checkout", "/search")


def _view(index: int, ts: int, **extra: Any) -> bytes:
    event: dict[str, Any] = {
        "event_id": f"fx-{index}",
        "ts": ts,
        "user_id": f"u{index % 7}",
        "page": PAGES[index % len(PAGES)],
        "latency_ms": round(20 + (index * 37) % 400 + 0.5, 1),
    }
    if index % 3 == 0:
        event["value"] = round(1.25 * index, 2)
    event.update(extra)
    return json.dumps(event, separators=(",", ":")).encode()


def _aggregate(records: Sequence[tuple[str, bytes]]) -> bytes:
    builder = AggregateBuilder(1_048_576)
    for key, data in records:
        assert builder.add(UserRecord(key, None, data))
    return builder.build()


def _broken_aggregate() -> bytes:
    """Magic and a matching MD5 around a protobuf cut short: not a valid aggregate."""
    body = b"\x1a\xff\xff"
    return MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()


def _batches() -> dict[str, list[tuple[str, bytes, int]]]:
    """Per fixture: (partition key, data, arrival ms) of each Kinesis record, in order."""
    plain = [(f"fx-{i}", _view(i, BASE_MS + 1_000 + i * 9_000), 0) for i in range(14)]
    kpl_records: list[tuple[str, bytes, int]] = []
    users = [(f"fx-{i}", _view(i, BASE_MS + 3_000 + (i - 100) * 7_000)) for i in range(100, 114)]
    kpl_records.append((users[0][0], _aggregate(users[0:6]), 0))
    kpl_records.append((users[6][0], users[6][1], 0))
    kpl_records.append((users[7][0], _aggregate(users[7:14]), 0))
    late = [
        ("fx-200", _view(200, BASE_MS + 140_000), 0),  # watermark to 130 s: 10:01 closes
        ("fx-201", _view(201, BASE_MS + 30_000), 0),  # window 10:00 is closed: late
        ("fx-202", b"{not json", 0),
        ("fx-203", b'{"event_id": "fx-203", "ts": 1780308000000}', 0),  # no page
        ("fx-204", _view(204, 4_102_444_800_000), 0),  # year 2100: a broken clock
        ("fx-205", _broken_aggregate(), 0),
        ("fx-206", _view(206, BASE_MS + 125_000), 0),  # window 10:02 is open
    ]
    batches = {"plain": plain, "kpl": kpl_records, "malformed_late": late}
    for records in batches.values():
        for index, (key, data, _) in enumerate(records):
            records[index] = (key, data, BASE_MS + 150_000 + index * 250)
    return batches


def make_event(name: str, records: Sequence[tuple[str, bytes, int]]) -> dict[str, Any]:
    shard = f"shardId-{SHARD_OF[name]:012d}"
    first = _SEQUENCE_BASE + (20 * 10**20 if name == "malformed_late" else 0)
    out = []
    for index, (key, data, arrival_ms) in enumerate(records):
        sequence = str(first + index * 10**20)
        out.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": arrival_ms / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": ROLE,
                "awsRegion": "us-east-1",
                "eventSourceARN": ARN,
            }
        )
    return {"Records": out}


def rendered() -> dict[str, str]:
    """Each fixture file's text, as this module makes it."""
    return {
        name: json.dumps(make_event(name, records), indent=2) + "\n"
        for name, records in _batches().items()
    }


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return result


def kinesis_records(event: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
    """(partition key, data) of each Kinesis record of an event."""
    for record in event["Records"]:
        yield record["kinesis"]["partitionKey"], base64.b64decode(record["kinesis"]["data"])


def rewritten(
    event: Mapping[str, Any], stream_arn: str, shard_id: str, stored: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``event`` as the ESM would deliver it from a real stream: its records replaced by
    ``stored`` (GetRecords entries, in the same order, with the same data)."""
    out = copy.deepcopy(dict(event))
    assert len(out["Records"]) == len(stored)
    for record, raw in zip(out["Records"], stored, strict=True):
        kinesis = record["kinesis"]
        assert base64.b64decode(kinesis["data"]) == raw["Data"]
        kinesis["sequenceNumber"] = raw["SequenceNumber"]
        kinesis["partitionKey"] = raw["PartitionKey"]
        kinesis["approximateArrivalTimestamp"] = raw["ApproximateArrivalTimestamp"].timestamp()
        record["eventID"] = f"{shard_id}:{raw['SequenceNumber']}"
        record["eventSourceARN"] = stream_arn
    return out


def esm_event(
    stream_arn: str, shard_id: str, stored: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The event the ESM invokes the function with for ``stored`` (GetRecords entries of
    ``shard_id``, in shard order), in the shape of the fixtures."""
    region = stream_arn.split(":")[3]
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": raw["PartitionKey"],
                    "sequenceNumber": raw["SequenceNumber"],
                    "data": base64.b64encode(raw["Data"]).decode(),
                    "approximateArrivalTimestamp": raw["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{raw['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": ROLE,
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for raw in stored
        ]
    }


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (FIXTURES / f"{name}.json").write_text(text)
        print(f"wrote {FIXTURES / name}.json")


if __name__ == "__main__":
    main()
