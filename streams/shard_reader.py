"""Reading one shard with GetRecords: iterators, backoff, expiry and the shard's end."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.windowing.records import Position, Record, make_record
from processors.windowing.redrive_envelope import MAGIC, route
from streams.aws_errors import ResourceMissing, error_code, is_retryable
from streams.kpl import MalformedAggregate, decode_aggregate, is_aggregate

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


def _arrival_ms(raw: Mapping[str, Any]) -> int | None:
    arrival = raw.get("ApproximateArrivalTimestamp")
    if arrival is None:
        return None
    return int(arrival.timestamp() * 1000)


class ShardReader:
    """Reads one shard in order, from just after ``start_after`` (or its oldest record).

    KPL aggregates are expanded into their user records: Position(sequence, index in the
    aggregate), each with its own partition key and the aggregate's arrival time. Any other
    Kinesis record is one record at sub-sequence 0. A redriven record (user record or
    plain) is unwrapped from its envelope: its ``data`` is the original bytes, and its
    ``only_for`` names the one pipeline that takes it
    (:mod:`processors.windowing.redrive_envelope`).
    """

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
        self._skip_through: Position | None = start_after
        """Records at or before this are not delivered (set until it has been passed)."""
        self._read_through: int | None = None
        """The sequence number of the last Kinesis record received, all of it delivered."""
        self._iterator: str | None = None
        self._limit = limit
        self.ended = False

    def _new_iterator(self) -> str:
        kwargs: dict[str, Any] = {"StreamName": self._stream, "ShardId": self.shard_id}
        if self._read_through is not None:
            # Every user record of that Kinesis record was delivered: go on after it.
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = str(self._read_through)
        elif self._skip_through is not None:
            # A checkpoint may lie inside a KPL aggregate, at any sub-sequence number
            # (0 included: the first user record of an aggregate is at sub 0, just like a
            # plain record, so the two cannot be told apart). Read the checkpoint's Kinesis
            # record again and skip what is at or before the checkpoint.
            kwargs["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = self._skip_through.sequence_number
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
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
        raws = response.get("Records", [])
        records = self._expand(raws)
        if raws:
            self._read_through = int(raws[-1]["SequenceNumber"])
            skip = self._skip_through
            if skip is not None:
                records = [record for record in records if record.position > skip]
                if self._read_through >= skip.sequence:
                    self._skip_through = None
        self._iterator = response.get("NextShardIterator")
        if self._iterator is None:
            self.ended = True
        return ReadResult(records, response.get("MillisBehindLatest"), self.ended)

    def _expand(self, raws: Sequence[Mapping[str, Any]]) -> list[Record]:
        return expand_records(
            self.shard_id,
            (
                (int(raw["SequenceNumber"]), raw["PartitionKey"], raw["Data"], _arrival_ms(raw))
                for raw in raws
            ),
        )


RawRecord = tuple[int, str, bytes, int | None]
"""(sequence number, partition key, data, approximate arrival in epoch ms) of one Kinesis
record, as GetRecords, the KCL or a Lambda event gives it."""


def expand_records(shard_id: str, raws: Iterable[RawRecord]) -> list[Record]:
    """The records the pipelines see: one per plain Kinesis record, one per user record of
    a KPL aggregate, redriven records out of their envelopes. Every runner reads through
    this, so they all see the same records at the same positions."""
    records: list[Record] = []
    append = records.append
    for sequence, partition_key, data, arrival in raws:
        if is_aggregate(data):
            try:
                users = decode_aggregate(data)
            except MalformedAggregate as exc:
                # Magic and MD5 say aggregate, but the protobuf is broken. Stopping here
                # would stop the shard for good; instead the record goes on as one plain
                # record (sub 0), which the pipelines dead-letter as invalid.
                log.warning(
                    "shard %s: record %s is a malformed KPL aggregate (%s); passing it on whole",
                    shard_id,
                    sequence,
                    exc,
                )
                users = None
            if users is not None:
                for sub, user in enumerate(users):
                    make = _redriven if user.data.startswith(MAGIC) else make_record
                    append(make(shard_id, sequence, sub, user.partition_key, user.data, arrival))
                continue
        make = _redriven if data.startswith(MAGIC) else make_record
        append(make(shard_id, sequence, 0, partition_key, data, arrival))
    return records


def _redriven(
    shard_id: str, sequence: int, sub: int, partition_key: str, data: bytes, arrival: int | None
) -> Record:
    """A record put back by ``shardflow dead-letters --redrive``, out of its envelope."""
    original, only_for, redrive_id = route(data)
    return make_record(
        shard_id, sequence, sub, partition_key, original, arrival, only_for, redrive_id
    )
