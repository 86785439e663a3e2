"""A small in-memory Kinesis for unit tests of the reader and the runner, with fault
injection: throttled calls, expired iterators, and closed shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, operation: str = "GetRecords", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


@dataclass
class FakeKinesis:
    shards: dict[str, list[bytes]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)
    """Codes to raise from the next get_records calls, in order."""
    iterator_requests: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def put(self, shard_id: str, *data: bytes) -> None:
        self.shards.setdefault(shard_id, []).extend(data)

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        return {"Shards": [{"ShardId": shard_id} for shard_id in sorted(self.shards)]}

    def describe_stream_summary(self, **kwargs: Any) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamStatus": "ACTIVE"}}

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        self.iterator_requests.append(kwargs)
        shard_id = kwargs["ShardId"]
        if shard_id not in self.shards:
            raise client_error("ResourceNotFoundException", "GetShardIterator")
        kind = kwargs["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            index = 0
        else:
            sequence = int(kwargs["StartingSequenceNumber"])
            index = sequence if kind == "AFTER_SEQUENCE_NUMBER" else sequence - 1
        return {"ShardIterator": f"{shard_id}|{index}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.reads += 1
        if self.faults:
            raise client_error(self.faults.pop(0))
        shard_id, _, start = ShardIterator.partition("|")
        index = int(start)
        data = self.shards[shard_id]
        chunk = data[index : index + Limit]
        records = [
            {
                "SequenceNumber": str(index + offset + 1),
                "PartitionKey": "pk",
                "Data": payload,
                "ApproximateArrivalTimestamp": datetime(2026, 11, 27, tzinfo=UTC),
            }
            for offset, payload in enumerate(chunk)
        ]
        end = index + len(chunk)
        finished = shard_id in self.closed and end >= len(data)
        return {
            "Records": records,
            "NextShardIterator": None if finished else f"{shard_id}|{end}",
            "MillisBehindLatest": 0 if end >= len(data) else 1000,
        }
