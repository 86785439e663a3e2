"""The event a Kinesis event source mapping (ESM) invokes a Lambda function with, decoded.

Shape (AWS Lambda developer guide, "Using AWS Lambda with Amazon Kinesis")::

    {"Records": [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "...",
                              "sequenceNumber": "4959...", "data": "<base64>",
                              "approximateArrivalTimestamp": 1545084650.987},
                  "eventSource": "aws:kinesis", "eventVersion": "1.0",
                  "eventID": "shardId-000000000006:4959...",
                  "eventName": "aws:kinesis:record",
                  "invokeIdentityArn": "arn:aws:iam::...:role/...", "awsRegion": "us-east-2",
                  "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/name"}]}

A batch holds records of one shard of one stream, in shard order. Each record is one
Kinesis record as the stream holds it: a KPL aggregate arrives whole (deaggregating is the
function's job), so it goes through :func:`streams.shard_reader.expand_records` like
every other runner's records.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processors.windowing.records import Position, Record
from streams.shard_reader import RawRecord, expand_records

EVENT_SOURCE = "aws:kinesis"


class BadEvent(ValueError):
    """The event is not a Kinesis ESM batch of one shard (a wiring mistake, not data)."""


@dataclass(frozen=True)
class KinesisBatch:
    """One ESM batch: the stream, the shard, and its Kinesis records in order."""

    stream_arn: str
    shard_id: str
    raws: tuple[RawRecord, ...]

    @property
    def stream(self) -> str:
        """The stream's name (the last part of its ARN)."""
        return stream_name(self.stream_arn)

    def records(self) -> list[Record]:
        """The records the pipelines see (KPL aggregates expanded, redriven records
        unwrapped), exactly as the embedded runner sees the same Kinesis records."""
        return expand_records(self.shard_id, self.raws)


def stream_name(arn: str) -> str:
    """``arn:aws:kinesis:<region>:<account>:stream/<name>`` -> ``<name>``."""
    kind, _, name = arn.rpartition(":")[2].partition("/")
    if kind != "stream" or not name:
        raise BadEvent(f"not a Kinesis stream ARN: {arn!r}")
    return name


def arrival_ms(seconds: float) -> int:
    """Epoch milliseconds of an ``approximateArrivalTimestamp`` (epoch seconds as a
    float), computed as the embedded runner computes them from the datetime botocore
    makes of the same number, so both runners give a record the same arrival."""
    return int(datetime.fromtimestamp(seconds, UTC).timestamp() * 1000)


def _field(record: Mapping[str, Any], name: str, index: int) -> Any:
    try:
        return record[name]
    except (KeyError, TypeError):
        raise BadEvent(f"record {index} has no {name!r}") from None


def parse_event(event: Mapping[str, Any]) -> KinesisBatch | None:
    """The batch in ``event``, or None when it holds no records. Raises
    :class:`BadEvent` for anything that is not one shard's Kinesis records."""
    records: Sequence[Mapping[str, Any]] = event.get("Records") or []
    if not records:
        return None
    raws: list[RawRecord] = []
    stream_arn = shard_id = None
    for index, record in enumerate(records):
        if record.get("eventSource") != EVENT_SOURCE:
            raise BadEvent(f"record {index} is not from Kinesis: {record.get('eventSource')!r}")
        arn = _field(record, "eventSourceARN", index)
        kinesis = _field(record, "kinesis", index)
        sequence = str(_field(kinesis, "sequenceNumber", index))
        shard, _, event_sequence = str(_field(record, "eventID", index)).rpartition(":")
        if not shard.startswith("shardId-") or event_sequence != sequence:
            raise BadEvent(f"record {index}: eventID {record.get('eventID')!r} is not shard:seq")
        if stream_arn is None:
            stream_arn, shard_id = arn, shard
        elif (arn, shard) != (stream_arn, shard_id):
            raise BadEvent(
                f"one batch holds records of {stream_arn} {shard_id} and of {arn} {shard}"
            )
        try:
            data = base64.b64decode(_field(kinesis, "data", index), validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise BadEvent(f"record {index}: data is not base64 ({exc})") from None
        arrival = kinesis.get("approximateArrivalTimestamp")
        raws.append(
            (
                int(sequence),
                str(_field(kinesis, "partitionKey", index)),
                data,
                None if arrival is None else arrival_ms(float(arrival)),
            )
        )
    assert stream_arn is not None and shard_id is not None
    stream_name(stream_arn)
    return KinesisBatch(stream_arn, shard_id, tuple(raws))


def first_not_durable(
    records: Sequence[Record], checkpoints: Sequence[Position | None]
) -> str | None:
    """The sequence number Lambda must retry from: that of the first record after the
    lowest durable checkpoint among the pipelines (None: all of them are durable). A KPL
    aggregate partly durable is retried whole; the engine skips what it already holds."""
    known = [checkpoint for checkpoint in checkpoints if checkpoint is not None]
    floor = min(known) if known and len(known) == len(checkpoints) else None
    for record in records:
        if floor is None or record.position > floor:
            return record.position.sequence_number
    return None
