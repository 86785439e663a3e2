"""Session windows from buckets: chaining merged buckets of one key into sessions.

A session pipeline stores, per key, shard and bucket (a tumbling window one gap long),
the aggregate states plus the first and last event time in the bucket
(:attr:`processors.pipeline.Pipeline.stored_aggregates`). Once buckets are merged across
shards, a key's sessions are its non-empty buckets in time order, cut wherever the next
bucket's first event is at least a gap after the current session's last event. Chaining
reads only merged values, so it gives the same sessions whatever order the rows, shards
or bridging events came in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from processors.windowing.windows import SessionWindows, Window


@dataclass(frozen=True, slots=True)
class Bucket:
    """One key's bucket, merged over every shard that wrote it."""

    key: str
    start_ms: int
    first_ms: int
    last_ms: int
    states: list[Any]
    shards: frozenset[str]


@dataclass(frozen=True, slots=True)
class Session:
    """One key's session: ``window`` is ``[first event, last event + gap)``."""

    key: str
    window: Window
    last_event_ms: int
    states: list[Any]
    shards: frozenset[str]
    buckets: int


def chain_sessions(
    windows: SessionWindows,
    buckets: Iterable[Bucket],
    merge_states: Callable[[list[Any], list[Any]], list[Any]],
) -> list[Session]:
    """Sessions from ``buckets`` (any order), sorted by key, then start."""
    gap = windows.gap_ms
    ordered = sorted(buckets, key=lambda b: (b.key, b.start_ms))
    sessions: list[Session] = []
    current: Session | None = None
    first = 0
    for bucket in ordered:
        if (
            current is not None
            and current.key == bucket.key
            and bucket.first_ms - current.last_event_ms < gap
        ):
            last = max(current.last_event_ms, bucket.last_ms)
            current = Session(
                bucket.key,
                Window(first, last + gap),
                last,
                merge_states(current.states, bucket.states),
                current.shards | bucket.shards,
                current.buckets + 1,
            )
            continue
        if current is not None:
            sessions.append(current)
        first = bucket.first_ms
        current = Session(
            bucket.key,
            Window(first, bucket.last_ms + gap),
            bucket.last_ms,
            bucket.states,
            bucket.shards,
            1,
        )
    if current is not None:
        sessions.append(current)
    return sessions
