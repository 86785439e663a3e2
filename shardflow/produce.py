"""``shardflow produce``: lines of a file (or synthetic events) into the stream, through the
producer library, with a summary and a file of what could not be sent."""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO

import orjson

from shardflow.input import OutgoingRecord
from streams.kinesis_producer import (
    KinesisProducer,
    ProduceFailed,
    ProducerStats,
    PutResult,
    RecordRejected,
)


@dataclass(frozen=True, slots=True)
class Failure:
    ref: int
    reason: str
    data: bytes


@dataclass
class ProduceReport:
    """What a produce run did: counts from the caller's side and the producer's stats."""

    read: int = 0
    sent: int = 0
    failures: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0
    stats: ProducerStats = field(default_factory=ProducerStats)

    def lines(self) -> list[str]:
        stats = self.stats
        rate = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        per_million = stats.payload_units / self.sent * 1e6 if self.sent else 0.0
        per_record = self.sent / stats.kinesis_records if stats.kinesis_records else 0.0
        return [
            f"events read       {self.read}",
            f"events sent       {self.sent}",
            f"failed            {len(self.failures)}",
            f"Kinesis records   {stats.kinesis_records} ({per_record:,.1f} events each)",
            f"PutRecords calls  {stats.put_calls}",
            f"retried entries   {stats.retried} ({stats.throttled} throttled)",
            f"bytes sent        {stats.bytes_sent}",
            f"PUT payload units {stats.payload_units} ({per_million:,.0f} per million events)",
            f"shards            {', '.join(f'{k}: {v}' for k, v in sorted(stats.shards.items()))}",
            f"elapsed           {self.elapsed:.2f}s ({rate:,.0f} events/s)",
        ]

    def write_failures(self, out: IO[bytes]) -> None:
        """One JSON line per event not sent: its line number, the reason, and the line
        itself (as text when it is UTF-8, else base64), so it can be fixed and sent again."""
        for failure in self.failures:
            entry: dict[str, object] = {"line": failure.ref, "reason": failure.reason}
            try:
                entry["data"] = failure.data.decode("utf-8")
            except UnicodeDecodeError:
                entry["data_base64"] = base64.b64encode(failure.data).decode("ascii")
            out.write(orjson.dumps(entry) + b"\n")


_Pending = tuple[OutgoingRecord, "Future[PutResult]"]


def produce(
    producer: KinesisProducer,
    records: Iterable[OutgoingRecord],
    rate: float | None = None,
    on_progress: Callable[[ProduceReport], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceReport:
    """Put every record (at most ``rate`` a second), wait for all of them, and report.
    Never raises for one record: each failure is in the report, with its reason."""
    report = ProduceReport(stats=producer.stats)
    started = clock()
    pending: deque[_Pending] = deque()
    last_progress = started

    def settle(block: bool) -> None:
        while pending and (block or pending[0][1].done()):
            record, future = pending.popleft()
            try:
                future.result()
                report.sent += 1
            except ProduceFailed as exc:
                report.failures.append(Failure(record.ref, exc.reason, record.data))

    for record in records:
        report.read += 1
        if rate is not None:
            due = started + (report.read - 1) / rate
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        try:
            pending.append((record, producer.put(record.data, record.partition_key)))
        except RecordRejected as exc:
            report.failures.append(Failure(record.ref, str(exc), record.data))
        settle(block=False)
        now = clock()
        if on_progress is not None and now - last_progress >= 1.0:
            last_progress = now
            report.elapsed = now - started
            on_progress(report)
    if not producer.flush():
        producer.close()  # its thread stopped: close gives every record left its fate
    settle(block=True)
    report.elapsed = clock() - started
    return report
