"""``shardflow ingest``'s side of the producer: handing a request's records over, and
waiting for what Kinesis made of each.

Buffer space cannot be reserved ahead, so :func:`hand_over` puts records without blocking,
in order, and stops at the first the producer cannot take (buffer full, closed): the
records before it are on their way, the rest were never given (``not_sent``).
:func:`settle` waits for the futures without blocking the event loop, and
:func:`outcome_status` turns the lot into one HTTP status (the contract is in
:mod:`shardflow.ingest`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.ingest_body import Record
from shardflow.settings import Settings
from streams.aws_errors import ResourceMissing, describe
from streams.producer_api import (
    BufferFull,
    ProduceFailed,
    ProducerClosed,
    ProducerStats,
    PutResult,
    RecordRejected,
)

if TYPE_CHECKING:
    from streams.clients import AwsClients

log = logging.getLogger("shardflow.ingest")


class Producer(Protocol):
    """What the endpoint uses of :class:`streams.kinesis_producer.KinesisProducer`."""

    stats: ProducerStats

    @property
    def buffered(self) -> int: ...

    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]: ...

    def close(self, timeout: float | None = None) -> None: ...


class ProducerUnavailable(Exception):
    """No producer for a stream: the endpoint is shutting down, or it could not be opened."""


def make_producer(clients: AwsClients, settings: Settings) -> Producer:
    """A producer for ``settings.stream`` (a missing stream fails here, with the reason)."""
    try:
        from streams.kinesis_producer import KinesisProducer  # noqa: PLC0415
    except ImportError as exc:
        raise ProducerUnavailable(f"the Kinesis producer library is missing: {exc}") from exc
    return KinesisProducer(clients.kinesis, settings.stream)


class ProducerPool:
    """One producer per stream, opened on first use and closed together."""

    def __init__(self, open_producer: Callable[[str], Producer]) -> None:
        self._open = open_producer
        self._producers: dict[str, Producer] = {}
        self._lock = threading.Lock()
        self._closed = False

    def get(self, stream: str) -> Producer:
        """The stream's producer; raises :class:`ProducerUnavailable` with the reason."""
        with self._lock:
            if self._closed:
                raise ProducerUnavailable("shutting down")
            producer = self._producers.get(stream)
            if producer is None:
                try:
                    producer = self._open(stream)
                except (ResourceMissing, ClientError, BotoCoreError, OSError) as exc:
                    raise ProducerUnavailable(
                        f"cannot open a producer for stream {stream!r}: {describe(exc) or exc}"
                    ) from exc
                self._producers[stream] = producer
            return producer

    def open_streams(self) -> dict[str, Producer]:
        # No lock: /health must not wait while get() opens a producer (a network call);
        # copying a dict is atomic.
        return dict(self._producers)

    def close_all(self, timeout: float | None) -> None:
        """Refuse new work, then let each producer send what it holds (idempotent)."""
        with self._lock:
            self._closed = True
            producers = list(self._producers.items())
            self._producers.clear()
        for stream, producer in producers:
            log.info("sending what the producer for %s still holds", stream)
            try:
                producer.close(timeout)
            except Exception:
                log.exception("closing the producer for %s failed", stream)


@dataclass(frozen=True)
class Failure:
    index: int
    error: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "error": self.error}


@dataclass
class Handover:
    """What happened as a request's records were given to the producer."""

    futures: list[tuple[int, Future[PutResult]]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    not_sent: range = range(0)
    stop_status: int | None = None
    """429 (buffer full) or 503 (closed, unavailable) when not every record was given."""
    retry_after: int = 0
    reason: str = ""


def hand_over(
    pool: ProducerPool, stream: str, records: list[Record], unavailable_retry_after: int
) -> Handover:
    """Put each record without blocking, in order, stopping at the first that does not fit."""
    count = len(records)
    try:
        producer = pool.get(stream)
    except ProducerUnavailable as exc:
        return Handover([], [], range(count), 503, unavailable_retry_after, str(exc))
    handover = Handover()
    for index, record in enumerate(records):
        try:
            future = producer.put(record.data, record.partition_key, block=False)
        except BufferFull as exc:
            retry_after = max(1, math.ceil(exc.retry_after))
            handover.not_sent, handover.stop_status = range(index, count), 429
            handover.retry_after, handover.reason = retry_after, str(exc)
            return handover
        except ProducerClosed as exc:
            handover.not_sent, handover.stop_status = range(index, count), 503
            handover.retry_after = unavailable_retry_after
            handover.reason = f"shutting down ({exc})"
            return handover
        except RecordRejected as exc:  # prepare() checks the same rule: should not happen
            handover.failed.append(Failure(index, str(exc)))
            continue
        handover.futures.append((index, future))
    return handover


@dataclass
class Settled:
    results: list[dict[str, Any]]
    failed: list[Failure]
    pending: list[int]
    produce_failures: int
    """How many of ``failed`` are Kinesis's (``ProduceFailed``), not the request's."""


def _observe(future: asyncio.Future[PutResult]) -> None:
    """Fetch the outcome of a future nobody waits for any more (no 'never retrieved' log)."""
    if not future.cancelled():
        future.exception()


async def settle(futures: list[tuple[int, Future[PutResult]]], timeout: float | None) -> Settled:
    """Wait (without blocking the event loop) for each future, up to ``timeout``."""
    settled = Settled([], [], [], 0)
    if not futures:
        return settled
    waiting = {asyncio.wrap_future(future): index for index, future in futures}
    # asyncio.wait cancels nothing on timeout: an event still in the producer keeps going.
    done, pending = await asyncio.wait(waiting, timeout=timeout)
    for wrapped in done:
        index = waiting[wrapped]
        if wrapped.cancelled():
            settled.failed.append(Failure(index, "cancelled before it was sent"))
            continue
        exc = wrapped.exception()
        if isinstance(exc, ProduceFailed):
            settled.failed.append(Failure(index, exc.reason))
            settled.produce_failures += 1
        elif exc is not None:
            log.error("event %d failed unexpectedly", index, exc_info=exc)
            settled.failed.append(Failure(index, f"{type(exc).__name__}: {exc}"))
        else:
            result = wrapped.result()
            settled.results.append(
                {
                    "index": index,
                    "shard_id": result.shard_id,
                    "sequence_number": result.sequence_number,
                    "sub_sequence_number": result.sub_sequence_number,
                }
            )
    for wrapped in pending:
        wrapped.add_done_callback(_observe)
    settled.results.sort(key=lambda entry: int(entry["index"]))
    settled.failed.sort(key=lambda failure: failure.index)
    settled.pending = sorted(waiting[wrapped] for wrapped in pending)
    return settled


def outcome_status(handover: Handover, settled: Settled) -> tuple[int, str | None]:
    """The HTTP status for a request that reached the producer, and the error, if any."""
    failed = len(handover.failed) + len(settled.failed)
    if handover.stop_status == 429:
        return 429, (
            f"the producer's buffer is full: {len(handover.not_sent)} events from index "
            f"{handover.not_sent.start} on were not sent; resend them (only them) after "
            "Retry-After seconds"
        )
    if handover.stop_status is not None:
        return handover.stop_status, (
            f"{handover.reason}: {len(handover.not_sent)} events from index "
            f"{handover.not_sent.start} on were not sent; resend them after Retry-After seconds"
        )
    if settled.pending:
        return 504, (
            f"Kinesis gave no answer in time for {len(settled.pending)} events; they may "
            "still be stored, so resending them may store them twice"
        )
    if failed:
        status = 503 if not settled.results and settled.produce_failures == failed else 502
        return status, f"Kinesis did not take {failed} events; `failed` says why, resend them"
    return 200, None
