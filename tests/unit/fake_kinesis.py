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
    faults: list[str | Exception] = field(default_factory=list)
    """Error codes (or exceptions) to raise from the next get_records calls, in order."""
    parents: dict[str, str] = field(default_factory=dict)
    """child shard id -> parent shard id."""
    end_on_empty_read: bool = False
    """Report a closed shard's end only on a read that returns nothing, as Kinesis often
    does, instead of together with its last records."""
    iterator_requests: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def put(self, shard_id: str, *data: bytes) -> None:
        self.shards.setdefault(shard_id, []).extend(data)

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        shards = []
        for shard_id in sorted(self.shards):
            shard: dict[str, Any] = {"ShardId": shard_id}
            if shard_id in self.parents:
                shard["ParentShardId"] = self.parents[shard_id]
            shards.append(shard)
        return {"Shards": shards}

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
            fault = self.faults.pop(0)
            raise fault if isinstance(fault, Exception) else client_error(fault)
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
        if self.end_on_empty_read and chunk:
            finished = False
        return {
            "Records": records,
            "NextShardIterator": None if finished else f"{shard_id}|{end}",
            "MillisBehindLatest": 0 if end >= len(data) else 1000,
        }
