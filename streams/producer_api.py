"""What the producer library promises: its configuration, results, errors and counters.

Kept apart from :mod:`streams.kinesis_producer` (the machinery) so that callers and the
HTTP ingestion endpoint can import the contract alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.shard_map import check_explicit_hash_key

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
PAYLOAD_UNIT_BYTES = 25 * 1024
"""Kinesis bills PUT payload units of 25 KB."""
SHARD_RECORDS_PER_SECOND = 1_000
SHARD_BYTES_PER_SECOND = 1024 * 1024


@dataclass(frozen=True)
class ProducerConfig:
    """Knobs, with defaults for a steady stream of small events."""

    linger_ms: float = 100.0
    """How long a record may wait for others to share its call (or aggregate)."""
    aggregate: bool = False
    max_aggregate_bytes: int = 4 * PAYLOAD_UNIT_BYTES
    """An aggregate's size (data and partition key), a whole number of PUT payload units."""
    ordered: bool = False
    record_ttl_s: float = 30.0
    """A record not accepted this long after ``put`` fails with :class:`ProduceFailed`."""
    max_buffered_records: int = 100_000
    max_buffered_bytes: int = 64 * 1024 * 1024
    rate_limit: float = 1.0
    """The share of each shard's write limits to use (1.0: all of it; the KPL's default is
    1.5, which lets one producer saturate a shard at the price of some throttling)."""
    max_calls_in_flight: int = 4
    """Concurrent PutRecords calls (each shard is in at most one of them)."""
    retry_base_s: float = 0.1
    retry_cap_s: float = 5.0
    """Backoff before the n-th resend of a record: uniform in [0, min(cap, base * 2**n))."""

    def __post_init__(self) -> None:
        if self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be above 0, got {self.rate_limit}")
        if not 0 < self.max_aggregate_bytes <= MAX_RECORD_BYTES:
            raise ValueError(
                f"max_aggregate_bytes must be above 0 and at most {MAX_RECORD_BYTES} "
                f"(a Kinesis record), got {self.max_aggregate_bytes}"
            )
        for name in ("linger_ms", "record_ttl_s", "retry_base_s", "retry_cap_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_buffered_records", "max_buffered_bytes", "max_calls_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    shard_map_refresh_s: float = 60.0


@dataclass(frozen=True)
class PutResult:
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    """0, or the record's index inside its KPL aggregate."""


class RecordRejected(ValueError):
    """A record Kinesis could never accept (raised by ``put`` before anything is sent)."""


class BufferFull(Exception):
    """``put(..., block=False)`` found the buffer full; try again in ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the producer's buffer is full; retry in {retry_after:.1f}s")
        self.retry_after = retry_after


class ProducerClosed(Exception):
    """``put`` after ``close``."""


class ProduceFailed(Exception):
    """The final failure of one record, set on its future."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ProducerStats:
    """Counters, updated as the producer works (read them any time)."""

    events: int = 0
    sent: int = 0
    failed: int = 0
    kinesis_records: int = 0
    put_calls: int = 0
    retried: int = 0
    throttled: int = 0
    bytes_sent: int = 0
    payload_units: int = 0
    shards: dict[str, int] = field(default_factory=dict)


def check_record(
    data: bytes, partition_key: str, explicit_hash_key: str | None = None
) -> str | None:
    """Why Kinesis would never accept this record, or None."""
    key_chars = len(partition_key)
    if not 1 <= key_chars <= MAX_PARTITION_KEY_CHARS:
        return f"partition key must be 1 to {MAX_PARTITION_KEY_CHARS} characters, got {key_chars}"
    size = len(data) + len(partition_key.encode("utf-8"))
    if size > MAX_RECORD_BYTES:
        return f"record is {size} bytes with its partition key; the limit is {MAX_RECORD_BYTES}"
    if explicit_hash_key is not None:
        return check_explicit_hash_key(explicit_hash_key)
    return None
