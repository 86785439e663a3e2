"""The producer library: put events into Kinesis from any thread, and learn each one's fate.

```python
with KinesisProducer(kinesis, "clickstream", ProducerConfig(aggregate=True)) as producer:
    future = producer.put(b'{"event_id": "e1", ...}', partition_key="e1")
    result = future.result()  # PutResult(shard_id, sequence_number, sub_sequence_number)
```

- ``put`` checks the record at once (:class:`RecordRejected` for over 1 MiB or a partition
  key that is not 1 to 256 characters), predicts its shard from the MD5 of its partition
  key and the open shards' hash ranges, and buffers it. A background thread sends a shard's
  records once the oldest has waited ``linger_ms``, or sooner when a call's worth is ready.
- PutRecords calls hold at most 500 records and 5 MiB. Entries that come back with an
  ``ErrorCode`` are resent by that code, with exponential backoff and full jitter, until the
  record's deadline (``record_ttl_s``); a record is never counted as sent on
  ``FailedRecordCount`` alone. Whole-call errors that can pass (throttling, 5xx, a dropped
  connection) are retried the same way; the rest (access denied, a KMS key that is
  disabled, a missing stream) fail the call's records at once, with the reason.
- Each shard is kept within its write limits (1,000 records/s and 1 MiB/s by default) with
  two token buckets, so a producer can fill a shard without being throttled; a throttled
  shard's buckets are emptied.
- With ``aggregate=True``, the records of one shard are packed into KPL aggregates
  (:mod:`streams.kpl`). Every user record of an aggregate carries the same explicit hash key
  (its first record's hash key), which is also the aggregate's, so a user record can never
  sit on a shard whose hash range does not hold its key, even when the stream was
  resharded since the producer last listed its shards. (Records given an explicit hash key
  by the caller are sent on their own.)
- With ``ordered=True``, each partition key's records reach Kinesis in ``put`` order:
  at most one call is in flight per shard, and a call carries at most one record per
  partition key, so a failed entry is resent before anything after it with the same key.
- Every ``put`` returns a :class:`concurrent.futures.Future` that resolves to a
  :class:`PutResult`, or fails with :class:`ProduceFailed` giving the reason. Nothing is
  dropped silently. ``close`` (and leaving the ``with`` block) sends what is buffered and
  waits for it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from streams.aws_errors import ResourceMissing, describe, error_code, is_not_found, is_retryable
from streams.backoff import full_jitter
from streams.producer_api import (
    PAYLOAD_UNIT_BYTES,
    SHARD_BYTES_PER_SECOND,
    SHARD_RECORDS_PER_SECOND,
    BufferFull,
    ProduceFailed,
    ProducerClosed,
    ProducerConfig,
    ProducerStats,
    PutResult,
    RecordRejected,
    check_record,
)
from streams.producer_queues import Entry, Outgoing, ShardQueues
from streams.shard_map import ShardMap, hash_key_of, list_all_shards

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef

__all__ = [
    "BufferFull",
    "KinesisProducer",
    "ProduceFailed",
    "ProducerClosed",
    "ProducerConfig",
    "ProducerStats",
    "PutResult",
    "RecordRejected",
]

log = logging.getLogger("shardflow.producer")


_Resolution = tuple[Entry, PutResult | ProduceFailed]
"""A record's fate: set on its future first, and only then does the record leave the
buffer, so a ``flush`` that returns finds every future done."""


class KinesisProducer:
    """Buffers records and sends them from a background thread. Thread-safe."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        config: ProducerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self._config = config or ProducerConfig()
        self._clock = clock
        self._cond = threading.Condition()
        self._queues = ShardQueues(self._config)
        self._map = self._list_shard_map()  # a missing stream fails here, at once
        self._map_at = clock()
        self._map_stale = False
        self._map_failures = 0
        self._map_retry_at = 0.0
        self._buffered_records = 0
        self._unresolved = 0
        """Records put whose futures are not set yet (``flush`` waits for 0)."""
        self._buffered_bytes = 0
        self._calls_in_flight = 0
        self._closed = False
        self._abandoned = False
        self._flushing = 0
        self.stats = ProducerStats()
        self._executor = ThreadPoolExecutor(
            self._config.max_calls_in_flight, thread_name_prefix="shardflow-put"
        )
        self._thread = threading.Thread(target=self._run, name="shardflow-producer", daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------

    def __enter__(self) -> KinesisProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]:
        """Buffer one record; its future resolves once Kinesis has it, or fails with
        :class:`ProduceFailed`. Raises :class:`RecordRejected` for a record Kinesis could
        never take, :class:`BufferFull` when ``block`` is false and the buffer is full."""
        problem = check_record(data, partition_key, explicit_hash_key)
        if problem is not None:
            raise RecordRejected(problem)
        size = len(data) + len(partition_key.encode("utf-8"))
        hash_key = hash_key_of(partition_key, explicit_hash_key)
        future: Future[PutResult] = Future()
        future.set_running_or_notify_cancel()  # a caller's cancel() cannot orphan a record
        config = self._config
        with self._cond:
            while True:
                if self._closed:
                    raise ProducerClosed("the producer is closed")
                if (
                    self._buffered_records < config.max_buffered_records
                    and self._buffered_bytes + size <= config.max_buffered_bytes
                ) or self._buffered_records == 0:
                    break
                if not block:
                    raise BufferFull(self._drain_estimate())
                self._cond.wait(0.1)
            now = self._clock()
            entry = Entry(data, partition_key, explicit_hash_key, hash_key, future, now, size)
            self._queues.shard(self._map.shard_for(hash_key), now).append(entry)
            self._buffered_records += 1
            self._unresolved += 1
            self._buffered_bytes += size
            self.stats.events += 1
            self._cond.notify_all()
        return future

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything buffered now, without waiting for the linger time, and wait
        until every record has its fate. False if ``timeout`` passed first."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._unresolved and self._thread.is_alive():
                    left = None if deadline is None else deadline - self._clock()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(0.1 if left is None else min(left, 0.1))
                return self._unresolved == 0
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records, send what is buffered, and wait (``timeout`` bounds the
        wait; records still unsent then fail with :class:`ProduceFailed`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        reason = "the producer was closed before this record was sent"
        if not self.flush(timeout):
            with self._cond:
                # Out of time: what is queued fails now; calls in flight finish, and what
                # they would resend fails too.
                self._abandoned = True
                failed = self._fail_everything(reason)
                self._cond.notify_all()
            self._resolve(failed)
        self._thread.join()
        self._executor.shutdown(wait=True)
        with self._cond:
            failed = self._fail_everything(reason)
        self._resolve(failed)

    @property
    def buffered(self) -> int:
        return self._buffered_records

    # -- the background thread ------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                now = self._clock()
                if now >= self._map_retry_at and (
                    self._map_stale or now - self._map_at >= self._config.shard_map_refresh_s
                ):
                    self._refresh_map(now)
                with self._cond:
                    if self._closed and (
                        self._abandoned
                        or (not self._buffered_records and not self._calls_in_flight)
                    ):
                        return
                    calls, wait = self._queues.plan(
                        self._clock(),
                        self._config.max_calls_in_flight - self._calls_in_flight,
                        urgent=self._closed or self._flushing > 0,
                    )
                    if not calls:
                        self._cond.wait(max(0.001, min(wait, 1.0)))
                        continue
                    self._calls_in_flight += len(calls)
                for call in calls:
                    self._executor.submit(self._send, call)
        except BaseException as exc:
            log.exception("producer thread failed")
            with self._cond:
                self._closed = True
                failed = self._fail_everything(f"the producer stopped: {type(exc).__name__}: {exc}")
                self._cond.notify_all()
            self._resolve(failed)

    def _list_shard_map(self) -> ShardMap:
        try:
            return ShardMap.from_shards(list_all_shards(self._kinesis, self._stream))
        except ClientError as exc:
            if is_not_found(exc):
                raise ResourceMissing(
                    f"stream {self._stream!r} not found: create it with `shardflow up`"
                ) from exc
            raise

    def _refresh_map(self, now: float) -> None:
        """List the open shards again, and move queued records to the shards that now
        hold their hash keys (after a split or a merge)."""
        try:
            fresh = self._list_shard_map()
        except Exception as exc:
            self._map_failures += 1
            delay = full_jitter(self._map_failures, base=0.5, cap=30.0)
            log.warning(
                "could not list the shards of %s (%s); keeping the old map, trying again in %.1fs",
                self._stream,
                exc,
                delay,
            )
            self._map_retry_at = now + delay
            return
        with self._cond:
            self._map, self._map_at, self._map_stale = fresh, now, False
            self._map_failures, self._map_retry_at = 0, 0.0
            self._queues.rebalance(fresh, now)

    def _drain_estimate(self) -> float:
        shards = max(1, len(self._queues.shards)) * self._config.rate_limit
        by_bytes = self._buffered_bytes / (SHARD_BYTES_PER_SECOND * shards)
        by_records = self._buffered_records / (SHARD_RECORDS_PER_SECOND * shards)
        if self._config.aggregate:
            by_records = 0.0  # aggregates carry many events a record
        return float(max(1.0, by_bytes, by_records))

    # -- sending --------------------------------------------------------------------

    def _send(self, call: list[Outgoing]) -> None:
        resolutions: list[_Resolution] = []
        try:
            resolutions = self._send_call(call)
        except BaseException as exc:  # a bug: fail the call's records rather than hang
            log.exception("PutRecords handling failed")
            reason = f"{type(exc).__name__}: {exc}"
            resolutions = [(m, ProduceFailed(reason)) for o in call for m in o.members]
        finally:
            # Buffer space and the shard are freed before any future is set, so a
            # done-callback may put (or flush) without waiting on this thread.
            with self._cond:
                for entry, outcome in resolutions:
                    self._settle(entry, failed=isinstance(outcome, ProduceFailed))
                self._calls_in_flight -= 1
                for outgoing in call:
                    shard = self._queues.shards.get(outgoing.shard_id)
                    if shard is not None:
                        shard.in_flight -= 1
                self._cond.notify_all()
            self._resolve(resolutions)

    def _send_call(self, call: list[Outgoing]) -> list[_Resolution]:
        records: list[PutRecordsRequestEntryTypeDef] = []
        for outgoing in call:
            record: PutRecordsRequestEntryTypeDef = {
                "Data": outgoing.data,
                "PartitionKey": outgoing.partition_key,
            }
            if outgoing.explicit_hash_key is not None:
                record["ExplicitHashKey"] = outgoing.explicit_hash_key
            records.append(record)
        try:
            response = self._kinesis.put_records(StreamName=self._stream, Records=records)
        except (ClientError, BotoCoreError) as exc:
            with self._cond:
                self.stats.put_calls += 1
            if is_not_found(exc):
                reason = f"stream {self._stream!r} not found: create it with `shardflow up`"
                return self._fail(call, reason)
            if is_retryable(exc):
                if error_code(exc) == "ProvisionedThroughputExceededException":
                    self._throttled(call)
                log.warning("PutRecords failed (%s); retrying its records", error_code(exc) or exc)
                return self._retry(call, error_code(exc) or type(exc).__name__)
            return self._fail(call, describe(exc) or str(exc))
        with self._cond:
            self.stats.put_calls += 1
        resolutions: list[_Resolution] = []
        retry: list[Outgoing] = []
        for outgoing, result in zip(call, response["Records"], strict=True):
            code = result.get("ErrorCode")
            if code:
                outgoing.members[0].last_error = f"{code}: {result.get('ErrorMessage', '')}"
                if code == "ProvisionedThroughputExceededException":
                    self._throttled([outgoing])
                retry.append(outgoing)
                continue
            shard_id, sequence = result["ShardId"], result["SequenceNumber"]
            if shard_id != outgoing.shard_id:
                self._map_stale = True  # resharded since the last listing
            for index, member in enumerate(outgoing.members):
                sub = index if outgoing.aggregated else 0
                resolutions.append((member, PutResult(shard_id, sequence, sub)))
            with self._cond:
                stats = self.stats
                stats.sent += len(outgoing.members)
                stats.kinesis_records += 1
                stats.bytes_sent += outgoing.size
                stats.payload_units += math.ceil(outgoing.size / PAYLOAD_UNIT_BYTES)
                stats.shards[shard_id] = stats.shards.get(shard_id, 0) + len(outgoing.members)
        if retry:
            resolutions += self._retry(retry, None)
        return resolutions

    def _throttled(self, outgoing: list[Outgoing]) -> None:
        """Kinesis said these records' shards were over their limits: empty their buckets."""
        now = self._clock()
        with self._cond:
            self.stats.throttled += len(outgoing)
            for shard_id in {o.shard_id for o in outgoing}:
                shard = self._queues.shards.get(shard_id)
                if shard is not None:
                    shard.records.drain(now)
                    shard.bytes.drain(now)

    def _retry(self, call: list[Outgoing], reason: str | None) -> list[_Resolution]:
        """Back into the queues after a backoff, or failed once past their deadline."""
        now = self._clock()
        ttl = self._config.record_ttl_s
        resolutions: list[_Resolution] = []
        with self._cond:
            for outgoing in call:
                error = reason or outgoing.members[0].last_error
                shard = self._queues.shard(self._map.shard_for(outgoing.members[0].hash_key), now)
                again = []
                for member in outgoing.members:
                    member.attempts += 1
                    member.last_error = error
                    if self._abandoned:
                        why = f"the producer was closed before it could resend this: {error}"
                        resolutions.append((member, ProduceFailed(why)))
                        continue
                    if member.first_sent is None:
                        member.first_sent = now
                    if member.attempts > 1 and now - member.first_sent >= ttl:
                        why = (
                            f"not accepted after {member.attempts} attempts in "
                            f"{now - member.first_sent:.1f}s: {error}"
                        )
                        resolutions.append((member, ProduceFailed(why)))
                        continue
                    member.not_before = now + full_jitter(
                        member.attempts,
                        base=self._config.retry_base_s,
                        cap=self._config.retry_cap_s,
                    )
                    again.append(member)
                self.stats.retried += len(again)
                self._queues.retry_later(shard, again)
            self._cond.notify_all()
        return resolutions

    def _fail(self, call: list[Outgoing], reason: str) -> list[_Resolution]:
        return [(member, ProduceFailed(reason)) for o in call for member in o.members]

    def _resolve(self, resolutions: list[_Resolution]) -> None:
        """Set the futures (outside the lock: done-callbacks are the caller's code), then
        count them resolved, which is what ``flush`` waits for."""
        for entry, outcome in resolutions:
            if isinstance(outcome, ProduceFailed):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)
        if resolutions:
            with self._cond:
                self._unresolved -= len(resolutions)
                self._cond.notify_all()

    def _settle(self, entry: Entry, failed: bool = False) -> None:
        """A record with its fate leaves the buffer. Call with the lock held."""
        self._buffered_records -= 1
        self._buffered_bytes -= entry.size
        if failed:
            self.stats.failed += 1

    def _fail_everything(self, reason: str) -> list[_Resolution]:
        """Take what is still queued out, failed (the lock is held); the caller resolves
        the result with :meth:`_resolve` once it has let go of the lock."""
        failed: list[_Resolution] = []
        for entry in self._queues.drain_all():
            self._settle(entry, failed=True)
            failed.append((entry, ProduceFailed(reason)))
        return failed
