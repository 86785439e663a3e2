"""An in-memory producer with the interface ``shardflow ingest`` uses (no tests here).

Like :class:`streams.kinesis_producer.KinesisProducer`, it resolves futures on a
background thread, raises the same exceptions, and keeps ``stats``. Knobs make it refuse
(``accept_at_most``: BufferFull after that many puts), fail chosen events
(``fail``: a reason, or None, per record), or hold every future until close
(``hold``), or answer each record ``delay`` seconds late.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import orjson

from streams.producer_api import (
    BufferFull,
    ProduceFailed,
    ProducerClosed,
    ProducerStats,
    PutResult,
)

T0 = 1_795_000_000_000
"""An event time (2026-11-18) for page views made here."""


def page_view(number: int, **fields: object) -> dict[str, object]:
    """A valid page-views event, changed by ``fields`` (None removes a field)."""
    event: dict[str, object] = {
        "event_id": f"e{number}",
        "ts": T0 + number,
        "page": "/home",
        "user_id": f"u{number % 3}",
        "latency_ms": 12.5,
        "value": 1.0,
    }
    event.update(fields)
    return {key: value for key, value in event.items() if value is not None}


def ndjson(*events: object) -> bytes:
    return b"\n".join(orjson.dumps(event) for event in events) + b"\n"


class FakeProducer:
    def __init__(
        self,
        *,
        accept_at_most: int | None = None,
        retry_after: float = 0.3,
        fail: Callable[[bytes], str | None] | None = None,
        hold: bool = False,
        delay: float = 0.0,
        shards: int = 2,
    ) -> None:
        self.delay = delay
        self.accept_at_most = accept_at_most
        self.retry_after = retry_after
        self.fail = fail
        self.shards = shards
        self.stats = ProducerStats()
        self.puts: list[tuple[bytes, str]] = []
        """Every record handed over, in put order."""
        self.stored: list[tuple[bytes, str, PutResult]] = []
        """What "Kinesis" took."""
        self.close_calls = 0
        self.closed = False
        self._lock = threading.Lock()
        self._held = threading.Event()
        if not hold:
            self._held.set()
        self._queue: queue.Queue[tuple[Future[PutResult], bytes, str] | None] = queue.Queue()
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="fake-producer", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        return self._queue.qsize()

    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]:
        assert not block, "ingest must never block the caller"
        with self._lock:
            if self.closed:
                raise ProducerClosed("the producer is closed")
            if self.accept_at_most is not None and len(self.puts) >= self.accept_at_most:
                raise BufferFull(self.retry_after)
            self.puts.append((data, partition_key))
            self.stats.events += 1
        future: Future[PutResult] = Future()
        self._queue.put((future, data, partition_key))
        return future

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self.close_calls += 1
            if self.closed:
                return
            self.closed = True
        self._held.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._held.wait()
            if self.delay:
                time.sleep(self.delay)
            future, data, key = item
            reason = self.fail(data) if self.fail else None
            if reason is not None:
                self.stats.failed += 1
                future.set_exception(ProduceFailed(reason))
                continue
            shard = int(hashlib.md5(key.encode()).hexdigest(), 16) % self.shards
            self._sequence += 1
            result = PutResult(
                shard_id=f"shardId-{shard:012d}",
                sequence_number=f"{49_000_000 + self._sequence}",
                sub_sequence_number=0,
            )
            self.stored.append((data, key, result))
            self.stats.sent += 1
            self.stats.shards[result.shard_id] = self.stats.shards.get(result.shard_id, 0) + 1
            future.set_result(result)
