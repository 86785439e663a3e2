"""Putting events into Kinesis with PutRecords, losing none.

Batches hold at most 500 records and 5 MiB (data plus partition keys). After each call the
entries that carry an ``ErrorCode`` are sent again, alone, with exponential backoff and
full jitter; entries never count as sent on ``FailedRecordCount`` alone. Records that can
never be accepted (over 1 MiB, bad partition key) are rejected before sending, with the
reason.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from streams.aws_errors import ResourceMissing, error_code, is_not_found, is_retryable
from streams.backoff import full_jitter

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger("shardflow.producer")

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
PAYLOAD_UNIT_BYTES = 25 * 1024
"""Kinesis bills PUT payload units of 25 KB."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to put. ``ref`` says where it came from (a line number) for reports."""

    data: bytes
    partition_key: str
    ref: int = 0

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class FailedRecord:
    ref: int
    reason: str


@dataclass
class ProduceSummary:
    """What a produce run did."""

    records: int = 0
    sent: int = 0
    put_calls: int = 0
    retries: int = 0
    bytes_sent: int = 0
    payload_units: int = 0
    elapsed: float = 0.0
    failed: list[FailedRecord] = field(default_factory=list)
    shards: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rate = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        per_million = self.payload_units / self.sent * 1e6 if self.sent else 0.0
        return [
            f"records read      {self.records}",
            f"records sent      {self.sent}",
            f"failed            {len(self.failed)}",
            f"PutRecords calls  {self.put_calls}",
            f"retried entries   {self.retries}",
            f"bytes sent        {self.bytes_sent}",
            f"PUT payload units {self.payload_units} ({per_million:,.0f} per million records)",
            f"shards            {', '.join(f'{k}: {v}' for k, v in sorted(self.shards.items()))}",
            f"elapsed           {self.elapsed:.2f}s ({rate:,.0f} records/s)",
        ]


def check_record(record: OutgoingRecord) -> str | None:
    """Why Kinesis would never accept ``record``, or None."""
    key_chars = len(record.partition_key)
    if not 1 <= key_chars <= MAX_PARTITION_KEY_CHARS:
        return f"partition key must be 1 to 256 characters, got {key_chars}"
    if record.size > MAX_RECORD_BYTES:
        return (
            f"record is {record.size} bytes with its partition key; the limit is {MAX_RECORD_BYTES}"
        )
    return None


def batches(
    records: Iterable[OutgoingRecord], max_records: int = MAX_RECORDS_PER_CALL
) -> Iterator[list[OutgoingRecord]]:
    """Group records into PutRecords-sized batches, in order."""
    batch: list[OutgoingRecord] = []
    size = 0
    for record in records:
        if batch and (len(batch) >= max_records or size + record.size > MAX_BYTES_PER_CALL):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record.size
    if batch:
        yield batch


class BatchProducer:
    """Sends records with PutRecords, resending failed entries until a deadline."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        max_attempts: int = 12,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._clock = clock

    def send(
        self,
        records: Iterable[OutgoingRecord],
        rate: float | None = None,
        on_progress: Callable[[ProduceSummary], None] | None = None,
    ) -> ProduceSummary:
        """Send every record; ``rate`` caps records per second. Never raises for a single
        record: failures are in the summary."""
        summary = ProduceSummary()
        started = self._clock()
        batch_size = MAX_RECORDS_PER_CALL if rate is None else max(1, min(500, int(rate / 10)))

        def accepted() -> Iterator[OutgoingRecord]:
            for record in records:
                summary.records += 1
                problem = check_record(record)
                if problem is None:
                    yield record
                else:
                    summary.failed.append(FailedRecord(record.ref, problem))

        for batch in batches(accepted(), batch_size):
            if rate is not None:
                due = started + (summary.sent + len(summary.failed)) / rate
                wait = due - self._clock()
                if wait > 0:
                    self._sleep(wait)
            self._send_batch(batch, summary)
            summary.elapsed = self._clock() - started
            if on_progress is not None:
                on_progress(summary)
        summary.elapsed = self._clock() - started
        return summary

    def _put(self, batch: list[OutgoingRecord]) -> list[dict[str, Any]]:
        response = self._kinesis.put_records(
            StreamName=self._stream,
            Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in batch],
        )
        return response["Records"]  # type: ignore[return-value]

    def _send_batch(self, batch: list[OutgoingRecord], summary: ProduceSummary) -> None:
        # Entries are tracked by their index in ``batch``: refs need not be unique.
        pending = list(range(len(batch)))
        last_error: dict[int, str] = {}
        for attempt in range(self._max_attempts):
            if attempt:
                summary.retries += len(pending)
                self._sleep(full_jitter(attempt, base=0.1, cap=5.0))
            summary.put_calls += 1
            try:
                results = self._put([batch[index] for index in pending])
            except (ClientError, BotoCoreError) as exc:
                if is_not_found(exc):
                    raise ResourceMissing(
                        f"stream {self._stream!r} not found: create it with `shardflow up`"
                    ) from exc
                if not is_retryable(exc):
                    raise
                reason = error_code(exc) or type(exc).__name__
                log.warning("PutRecords failed (%s), retrying", reason)
                last_error.update((index, reason) for index in pending)
                continue
            retry = []
            for index, result in zip(pending, results, strict=True):
                if "ErrorCode" in result:
                    last_error[index] = f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}"
                    retry.append(index)
                    continue
                record = batch[index]
                summary.sent += 1
                summary.bytes_sent += record.size
                summary.payload_units += math.ceil(record.size / PAYLOAD_UNIT_BYTES)
                shard = result.get("ShardId", "?")
                summary.shards[shard] = summary.shards.get(shard, 0) + 1
            if not retry:
                return
            pending = retry
        for index in pending:
            summary.failed.append(
                FailedRecord(
                    batch[index].ref,
                    f"gave up after {self._max_attempts} attempts: {last_error.get(index)}",
                )
            )
