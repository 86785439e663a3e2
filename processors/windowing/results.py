"""Merging partial rows across shards into window results, and deciding finality."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processors.pipeline import Pipeline
from processors.windowing.codec import IncompatibleState, decode_states
from processors.windowing.engine import ShardProgress
from processors.windowing.rows import StoredRow
from processors.windowing.sessions import Bucket, chain_sessions
from processors.windowing.windows import SessionWindows, Window


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window of one key, merged over every shard that contributed."""

    pipeline: str
    key: str
    window: Window
    final: bool
    values: dict[str, Any]
    shards: int


EVERYTHING = 2**63
"""The frontier when every shard has ended: every window is final."""


def final_frontier(shards: Sequence[ShardProgress], allowed_lateness_ms: int) -> int | None:
    """The time up to which windows are final: a window is final when its end is at or
    before it (None: nothing is final).

    - A shard that ended (closed after resharding and read to its end) holds nothing open.
    - An idle shard (``idle_since_ms`` set: the runner saw nothing from it for the
      pipeline's ``idle_timeout_ms``) holds nothing open either; when it wakes, its
      watermark is lifted to the frontier of that moment, so what was final stays final.
    - Otherwise the frontier is the lowest watermark of the active shards. When every
      shard that has not ended is idle, it is the highest of their watermarks: all that
      was sent has been read.
    - With no known shards nothing is final.
    """
    if not shards:
        return None
    active: list[int | None] = []
    idle: list[int] = []
    for shard in shards:
        if shard.ended:
            continue
        watermark = shard.watermark(allowed_lateness_ms)
        if shard.idle_since_ms is None:
            active.append(watermark)
        elif watermark is not None:
            idle.append(watermark)
    if active:
        if None in active:
            return None
        return min(w for w in active if w is not None)
    if idle:
        return max(idle)
    if any(not shard.ended for shard in shards):
        return None  # idle shards that never saw an event
    return EVERYTHING


def is_final(window: Window, shards: Sequence[ShardProgress], allowed_lateness_ms: int) -> bool:
    """True when ``window`` is closed on every shard that can contribute to it
    (:func:`final_frontier`)."""
    frontier = final_frontier(shards, allowed_lateness_ms)
    return frontier is not None and window.end_ms <= frontier


def merge_rows(
    pipeline: Pipeline[Any], rows: Iterable[StoredRow], shards: Sequence[ShardProgress]
) -> list[WindowResult]:
    """Window results from partial rows, sorted by key, then window start. For session
    windows, the rows are buckets and the results are the sessions they chain into."""
    frontier = final_frontier(shards, pipeline.allowed_lateness_ms)
    return [result for result, _ in merge_at(pipeline, rows, frontier)]


def merge_at(
    pipeline: Pipeline[Any], rows: Iterable[StoredRow], frontier: int | None
) -> list[tuple[WindowResult, list[Any]]]:
    """:func:`merge_rows` with the final frontier given, and each result's merged states
    (every stored aggregate, session bounds included)."""
    specs = pipeline.stored_aggregates
    shown = len(pipeline.aggregates)

    def merge_states(left: list[Any], right: list[Any]) -> list[Any]:
        return [spec.aggregator.merge(a, b) for spec, a, b in zip(specs, left, right, strict=True)]

    def values(states: list[Any]) -> dict[str, Any]:
        return {
            spec.name: spec.aggregator.result(state)
            for spec, state in zip(specs[:shown], states, strict=False)
        }

    merged = _merge_partials(pipeline, rows, merge_states)
    windows = pipeline.windows
    if isinstance(windows, SessionWindows):
        first, last = shown, shown + 1
        buckets = [
            Bucket(key, window.start_ms, states[first], states[last], states, contributors)
            for (key, _), (window, states, contributors) in merged.items()
        ]
        return [
            (
                WindowResult(
                    pipeline.name,
                    session.key,
                    session.window,
                    frontier is not None and windows.closes_at(session.last_event_ms) <= frontier,
                    values(session.states),
                    len(session.shards),
                ),
                session.states,
            )
            for session in chain_sessions(windows, buckets, merge_states)
        ]
    return [
        (
            WindowResult(
                pipeline.name,
                key,
                window,
                frontier is not None and window.end_ms <= frontier,
                values(states),
                len(contributors),
            ),
            states,
        )
        for (key, _), (window, states, contributors) in sorted(merged.items())
    ]


def _merge_partials(
    pipeline: Pipeline[Any],
    rows: Iterable[StoredRow],
    merge_states: Callable[[list[Any], list[Any]], list[Any]],
) -> dict[tuple[str, int], tuple[Window, list[Any], frozenset[str]]]:
    """Partial rows merged by (key, window start), with the shards that wrote them."""
    specs = pipeline.stored_aggregates
    windows = pipeline.windows.describe()
    merged: dict[tuple[str, int], tuple[Window, list[Any], frozenset[str]]] = {}
    # A fixed merge order (by shard) gives the same float sums whatever order rows are read in.
    for row in sorted(rows, key=lambda r: (r.key, r.window.start_ms, r.shard_id)):
        states = decode_states(specs, row.state, windows)
        slot = (row.key, row.window.start_ms)
        existing = merged.get(slot)
        if existing is None:
            merged[slot] = (row.window, states, frozenset((row.shard_id,)))
            continue
        window, current, contributors = existing
        if window != row.window:
            raise IncompatibleState(
                f"rows of {pipeline.name!r} for key {row.key!r} disagree on the window "
                f"starting at {window.start_ms}: the pipeline's windows changed under "
                "the same name"
            )
        merged[slot] = (window, merge_states(current, states), contributors | {row.shard_id})
    return merged
