"""The producer's buffer: per-shard queues, rate limits, and the calls they make.

Pure bookkeeping (time is passed in, nothing here talks to AWS or takes locks): the
producer's background thread asks :meth:`ShardQueues.plan` which PutRecords calls to make
now, and gives failed records back with :meth:`ShardQueues.retry_later`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from streams.kpl import AggregateBuilder, UserRecord
from streams.producer_api import (
    MAX_BYTES_PER_CALL,
    MAX_RECORDS_PER_CALL,
    SHARD_BYTES_PER_SECOND,
    SHARD_RECORDS_PER_SECOND,
    ProducerConfig,
    PutResult,
)
from streams.shard_map import ShardMap
from streams.token_bucket import TokenBucket

_TAKE_LIMIT = MAX_RECORDS_PER_CALL * 4
"""At most this many records leave a shard's queue per plan (aggregates hold many)."""


@dataclass(eq=False, slots=True)
class Entry:
    """One user record in the buffer, with its future and its retry state."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    hash_key: int
    future: Future[PutResult]
    enqueued: float
    size: int
    attempts: int = 0
    first_sent: float | None = None
    """When its first attempt failed: the deadline for retries runs from here."""
    not_before: float = 0.0
    last_error: str = ""


@dataclass(eq=False, slots=True)
class Outgoing:
    """One Kinesis record of a call: a user record, or a KPL aggregate of several."""

    shard_id: str
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    members: list[Entry]

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode("utf-8"))

    @property
    def aggregated(self) -> bool:
        return len(self.members) > 1


class ShardQueue:
    """One shard's waiting records and write-limit buckets."""

    def __init__(self, shard_id: str, config: ProducerConfig, now: float) -> None:
        self.shard_id = shard_id
        self.queue: deque[Entry] = deque()
        self.queued_bytes = 0
        self.retry: list[Entry] = []
        """Records waiting out a backoff (unordered mode; ordered mode keeps them at the
        front of ``queue``, so nothing of the same key overtakes them)."""
        self.in_flight = 0
        scale = config.rate_limit
        rate, volume = SHARD_RECORDS_PER_SECOND * scale, SHARD_BYTES_PER_SECOND * scale
        self.records = TokenBucket(rate, rate, now)
        self.bytes = TokenBucket(volume, volume, now)

    def append(self, entry: Entry) -> None:
        self.queue.append(entry)
        self.queued_bytes += entry.size

    def put_back(self, entries: Sequence[Entry]) -> None:
        """Return entries to the front of the queue, in order."""
        self.queue.extendleft(reversed(entries))
        self.queued_bytes += sum(entry.size for entry in entries)

    def pop(self) -> Entry:
        entry = self.queue.popleft()
        self.queued_bytes -= entry.size
        return entry

    def oldest_ready(self, now: float) -> float | None:
        """When the oldest record that may go now was put, or None if none may."""
        times = [entry.enqueued for entry in self.retry if entry.not_before <= now]
        if self.queue and self.queue[0].not_before <= now:
            times.append(self.queue[0].enqueued)
        return min(times, default=None)

    def entries(self) -> list[Entry]:
        return [*self.retry, *self.queue]


class ShardQueues:
    """Every shard's queue, and the calls to make from them."""

    def __init__(self, config: ProducerConfig) -> None:
        self.config = config
        self.shards: dict[str, ShardQueue] = {}

    def shard(self, shard_id: str, now: float) -> ShardQueue:
        queue = self.shards.get(shard_id)
        if queue is None:
            queue = self.shards[shard_id] = ShardQueue(shard_id, self.config, now)
        return queue

    @property
    def queued(self) -> bool:
        return any(shard.queue or shard.retry for shard in self.shards.values())

    def rebalance(self, shard_map: ShardMap, now: float) -> None:
        """After the shards were listed again: records queued for shards that are no
        longer open move to the shards that now hold their hash keys."""
        open_ids = set(shard_map.shard_ids)
        for shard_id in [s for s in self.shards if s not in open_ids]:
            old = self.shards[shard_id]
            if old.in_flight:
                continue  # its call's failures come back through retry_later
            del self.shards[shard_id]
            for entry in old.entries():
                self.shard(shard_map.shard_for(entry.hash_key), now).append(entry)

    def plan(self, now: float, room: int, urgent: bool) -> tuple[list[list[Outgoing]], float]:
        """Up to ``room`` calls to make now, and how long to wait when there are none.

        A shard's records go once the oldest has waited ``linger_ms``, or when a call's
        worth (or an aggregate's) is queued, or at once when ``urgent`` (a flush). Each
        Kinesis record takes one record token and its size in byte tokens from its shard.
        """
        config = self.config
        # With nothing queued, wait long: a put wakes the producer thread anyway.
        wait = max(config.linger_ms / 1000, 0.05) if self.queued else 1.0
        if room <= 0:
            return [], wait
        full_bytes = config.max_aggregate_bytes if config.aggregate else MAX_BYTES_PER_CALL // 4
        calls: list[list[Outgoing]] = []
        current: list[Outgoing] = []
        current_bytes = 0
        for shard in list(self.shards.values()):
            if len(calls) >= room:
                break
            if shard.in_flight:
                # One call at a time per shard: a shard takes 1 MiB/s, less than a call's
                # worth per round trip, and its records then reach it in the order sent.
                continue
            oldest = shard.oldest_ready(now)
            if oldest is None:
                if shard.retry:
                    wait = min(wait, min(e.not_before for e in shard.retry) - now)
                continue
            age = now - oldest
            due = urgent or age * 1000 >= config.linger_ms
            full = len(shard.queue) >= MAX_RECORDS_PER_CALL or shard.queued_bytes >= full_bytes
            if not (due or full):
                wait = min(wait, config.linger_ms / 1000 - age)
                continue
            packed = self.pack(shard.shard_id, self._take_ready(shard, now))
            if not due and config.aggregate and packed and packed[-1].size < full_bytes * 0.95:
                # Sent early because an aggregate's worth was queued: the part-filled
                # aggregate behind it waits for more (PUT units are billed per 25 KB).
                shard.put_back(packed.pop().members)
            for index, outgoing in enumerate(packed):
                call_full = len(current) >= MAX_RECORDS_PER_CALL or (
                    current_bytes + outgoing.size > MAX_BYTES_PER_CALL
                )
                tokens = (
                    not call_full
                    and shard.records.can_take(1, now)
                    and shard.bytes.can_take(outgoing.size, now)
                )
                if not tokens or (config.ordered and config.aggregate and index > 0):
                    # The call is full, the shard is out of tokens, or (in order, with
                    # aggregates) it has its one aggregate in this call: the rest waits, in
                    # order, at the front of the queue. A shard is never in two calls.
                    for rest in reversed(packed[index:]):
                        shard.put_back(rest.members)
                    if call_full:
                        wait = 0.0
                    elif not tokens:
                        wait = min(
                            wait,
                            max(
                                shard.records.wait_time(1, now),
                                shard.bytes.wait_time(outgoing.size, now),
                            ),
                        )
                    break
                shard.records.take(1, now)
                shard.bytes.take(outgoing.size, now)
                current.append(outgoing)
                current_bytes += outgoing.size
                shard.in_flight += 1
            if current and (
                len(current) >= MAX_RECORDS_PER_CALL or current_bytes >= MAX_BYTES_PER_CALL // 2
            ):
                calls.append(current)
                current, current_bytes = [], 0
        if current:
            calls.append(current)
        return calls, max(wait, 0.0)

    def _take_ready(self, shard: ShardQueue, now: float) -> list[Entry]:
        """Records that may go now, in order, taken out of the shard's queues."""
        if self.config.ordered:
            out: list[Entry] = []
            keys: set[str] = set()
            while shard.queue and shard.queue[0].not_before <= now and len(out) < _TAKE_LIMIT:
                head = shard.queue[0]
                if head.partition_key in keys and not self.config.aggregate:
                    break  # one record per key and call: a failure cannot reorder a key
                keys.add(head.partition_key)
                out.append(shard.pop())
            return out
        ready = [entry for entry in shard.retry if entry.not_before <= now]
        if ready:
            shard.retry = [entry for entry in shard.retry if entry.not_before > now]
        while shard.queue and len(ready) < _TAKE_LIMIT:
            ready.append(shard.pop())
        return ready

    def pack(self, shard_id: str, entries: list[Entry]) -> list[Outgoing]:
        """Kinesis records for ``entries`` (all predicted for ``shard_id``): each alone, or
        KPL aggregates of up to ``max_aggregate_bytes``.

        Every user record of an aggregate gets the aggregate's explicit hash key (its first
        record's hash key), so all of them belong to whichever shard takes the aggregate,
        even if the stream was resharded since the shards were listed. Records the caller
        gave an explicit hash key go alone, keeping it; a lone record goes un-aggregated.
        """
        if not self.config.aggregate:
            return [
                Outgoing(shard_id, e.data, e.partition_key, e.explicit_hash_key, [e])
                for e in entries
            ]
        outgoing: list[Outgoing] = []
        builder: AggregateBuilder | None = None
        members: list[Entry] = []
        shared = ""

        def finish() -> None:
            if builder is None or not members:
                return
            first = members[0]
            if len(members) == 1:
                outgoing.append(
                    Outgoing(shard_id, first.data, first.partition_key, shared, [first])
                )
            else:
                outgoing.append(
                    Outgoing(shard_id, builder.build(), first.partition_key, shared, members)
                )

        for entry in entries:
            if entry.explicit_hash_key is not None:
                finish()  # keep the order: what came before goes before
                builder, members = None, []
                outgoing.append(
                    Outgoing(
                        shard_id, entry.data, entry.partition_key, entry.explicit_hash_key, [entry]
                    )
                )
                continue
            if builder is None or not builder.add(
                UserRecord(entry.partition_key, shared, entry.data)
            ):
                finish()
                builder, members, shared = (
                    AggregateBuilder(self.config.max_aggregate_bytes),
                    [],
                    str(entry.hash_key),
                )
                if not builder.add(UserRecord(entry.partition_key, shared, entry.data)):
                    # Too big for any aggregate: it goes alone (it fits a record: put
                    # checked that), under its own key.
                    outgoing.append(
                        Outgoing(shard_id, entry.data, entry.partition_key, None, [entry])
                    )
                    builder, members = None, []
                    continue
            members.append(entry)
        finish()
        return outgoing

    def retry_later(self, shard: ShardQueue, entries: list[Entry]) -> None:
        """Records whose backoff (``not_before``) is set, back in line."""
        if self.config.ordered:
            shard.put_back(entries)
        else:
            shard.retry.extend(entries)

    def drain_all(self) -> list[Entry]:
        """Take every queued record out (to fail them on close)."""
        out: list[Entry] = []
        for shard in self.shards.values():
            out += shard.entries()
            shard.retry.clear()
            shard.queue.clear()
            shard.queued_bytes = 0
        return out
