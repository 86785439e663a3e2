"""Reading one shard with GetRecords: iterators, backoff, expiry and the shard's end."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.windowing.records import Position, Record, make_record
from streams.aws_errors import ResourceMissing, error_code, is_retryable

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger("shardflow.reader")

GET_RECORDS_LIMIT = 10_000


@dataclass
class ReadResult:
    """One GetRecords call's outcome. ``throttled`` asks the caller to back off."""

    records: list[Record] = field(default_factory=list)
    millis_behind: int | None = None
    ended: bool = False
    throttled: bool = False
    renewed: bool = False
    """The iterator expired and was dropped; read again at once."""


def _arrival_ms(raw: dict[str, Any]) -> int | None:
    arrival = raw.get("ApproximateArrivalTimestamp")
    if arrival is None:
        return None
    return int(arrival.timestamp() * 1000)


class ShardReader:
    """Reads one shard in order, from just after ``start_after`` (or its oldest record)."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        shard_id: str,
        start_after: Position | None,
        limit: int = GET_RECORDS_LIMIT,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self.shard_id = shard_id
        self._last: Position | None = start_after
        self._iterator: str | None = None
        self._limit = limit
        self.ended = False

    def _new_iterator(self) -> str:
        kwargs: dict[str, Any] = {"StreamName": self._stream, "ShardId": self.shard_id}
        if self._last is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        elif self._last.sub > 0:
            # Inside a KPL aggregate: read it again; the engines skip what they have.
            kwargs["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = self._last.sequence_number
        else:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = self._last.sequence_number
        try:
            return self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ResourceMissing(
                    f"shard {self.shard_id} of stream {self._stream!r} not found: {exc}"
                ) from exc
            raise

    def read(self) -> ReadResult:
        """One GetRecords call. Throttling and expired iterators are handled here."""
        if self.ended:
            return ReadResult(ended=True)
        try:
            if self._iterator is None:
                self._iterator = self._new_iterator()
            response = self._kinesis.get_records(ShardIterator=self._iterator, Limit=self._limit)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            if code == "ExpiredIteratorException":
                log.info("shard %s: iterator expired, renewing", self.shard_id)
                self._iterator = None
                return ReadResult(renewed=True)
            if is_retryable(exc):
                log.warning("shard %s: %s, backing off", self.shard_id, code or exc)
                return ReadResult(throttled=True)
            raise
        shard_id = self.shard_id
        records = [
            make_record(
                shard_id,
                int(raw["SequenceNumber"]),
                0,
                raw["PartitionKey"],
                raw["Data"],
                _arrival_ms(raw),  # type: ignore[arg-type]
            )
            for raw in response.get("Records", [])
        ]
        if records:
            self._last = records[-1].position
        self._iterator = response.get("NextShardIterator")
        if self._iterator is None:
            self.ended = True
        return ReadResult(records, response.get("MillisBehindLatest"), self.ended)
