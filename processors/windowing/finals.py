"""Final rows: once a window is final, its partial rows merged into one row. Pure.

The finalizer works through window starts in time order behind a cursor, ``through``:
every window (or session bucket) starting before it is final and has its final row. One
step reads the partial rows of the windows starting in ``[through, frontier)``, merges
them across shards, writes the final ones and moves the cursor to the first window that
is still open. Finality is decided by the final frontier alone (results.final_frontier),
which never moves back, and a final window never changes, so planning the same step
twice, or on two workers, gives the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from processors.pipeline import Pipeline
from processors.windowing.codec import StateCodec, decode_states
from processors.windowing.results import WindowResult, merge_at
from processors.windowing.rows import StoredRow
from processors.windowing.windows import (
    HoppingWindows,
    SessionWindows,
    TumblingWindows,
    Window,
    Windows,
)

END_OF_STARTS = 10**13
"""No window starts at or after this: storage keys hold 13 digits."""


@dataclass(frozen=True, slots=True)
class FinalRow:
    """One final window of one key: the values of its aggregates and their merged
    states (the codec's blob, session bounds included), over ``shards`` shards."""

    pipeline: str
    key: str
    window_start_ms: int
    window_end_ms: int
    values: dict[str, Any]
    state: bytes
    shards: int
    slot_ms: int | None = None
    """Where the row sorts among its key's final rows when not at ``window_start_ms``: a
    session's first bucket (so that the window index, which lists buckets, finds it)."""

    @property
    def sort_ms(self) -> int:
        return self.window_start_ms if self.slot_ms is None else self.slot_ms


def final_result(pipeline: Pipeline[Any], row: FinalRow) -> WindowResult:
    """The window result a final row holds, its values computed from its stored states
    (exact: the ``values`` kept beside them are a JSON copy for other readers)."""
    specs = pipeline.stored_aggregates
    states = decode_states(specs, row.state, pipeline.windows.describe())
    values = {
        spec.name: spec.aggregator.result(state)
        for spec, state in zip(specs[: len(pipeline.aggregates)], states, strict=False)
    }
    return WindowResult(
        row.pipeline,
        row.key,
        Window(row.window_start_ms, row.window_end_ms),
        True,
        values,
        row.shards,
    )


def stored_result(pipeline: Pipeline[Any], row: FinalRow) -> WindowResult:
    """:func:`final_result` from the values stored beside the states (computed from them
    when the row was written), without decoding the states: what queries read. The copy
    holds NaN and infinities as None; a row written before an aggregate was added (its
    values lack it) is decoded instead, so the new aggregate reads as initial."""
    names = pipeline.aggregate_names
    stored = row.values
    if not all(name in stored for name in names):
        return final_result(pipeline, row)
    return WindowResult(
        row.pipeline,
        row.key,
        Window(row.window_start_ms, row.window_end_ms),
        True,
        {name: stored[name] for name in names},
        row.shards,
    )


@dataclass(frozen=True)
class FinalStep:
    """What one finalizer step writes, in order: ``finals``, then the cursor moves to
    ``through``; ``partials`` are the partial rows before it, now covered by final rows.
    For sessions, ``finals`` may also hold sessions past the new cursor (final, though
    an earlier session of another key is not): the next step plans them again."""

    finals: list[FinalRow]
    through: int
    partials: list[StoredRow]


def first_open_start(windows: Windows, frontier: int) -> int:
    """The earliest window start whose window (or session bucket) may still be open at
    ``frontier``: every window starting before it ends at or before ``frontier``."""
    frontier = min(frontier, END_OF_STARTS)
    if isinstance(windows, HoppingWindows):
        size, step = windows.size_ms, windows.step_ms
        if frontier < size:
            return 0
        return (frontier - size) - (frontier - size) % step + step
    if isinstance(windows, TumblingWindows | SessionWindows):
        size = windows.size_ms
        return frontier - frontier % size
    # Other window kinds: windows start no later than they end.
    return max(0, frontier - windows.size_ms + 1)


def plan_step(
    pipeline: Pipeline[Any], rows: Iterable[StoredRow], frontier: int, through: int
) -> FinalStep:
    """Final rows from ``rows`` (every partial row of the windows starting in
    ``[through, frontier)``), and where the cursor moves: past every window, or session
    bucket, that is final and written.

    For session windows the rows are buckets: a session is written once it can no longer
    grow, and the cursor stops at the first bucket of the earliest session that still
    can, or earlier, so that no session has buckets on both sides of it (a bucket
    belongs to exactly one session; the next step then reads whole sessions only).
    """
    rows = list(rows)
    codec = StateCodec(pipeline.stored_aggregates, pipeline.windows.describe())
    merged = merge_at(pipeline, rows, frontier)
    next_through = max(through, first_open_start(pipeline.windows, frontier))
    windows = pipeline.windows
    slot: dict[tuple[str, int], int] = {}
    if isinstance(windows, SessionWindows):
        next_through = _session_cursor(windows, [result for result, _ in merged], next_through)
        next_through = max(through, next_through)
        gap = windows.gap_ms
        for result, _ in merged:
            start = result.window.start_ms
            slot[(result.key, start)] = start - start % gap
    finals = [
        FinalRow(
            pipeline.name,
            result.key,
            result.window.start_ms,
            result.window.end_ms,
            result.values,
            codec.encode(states),
            result.shards,
            slot.get((result.key, result.window.start_ms)),
        )
        for result, states in merged
        # A session beyond the cursor can be final while an earlier one is still open
        # (one key that never pauses must not hold every other key's sessions back).
        if result.final and result.window.start_ms >= through
    ]
    finals.sort(key=lambda row: (row.window_start_ms, row.key))
    partials = [row for row in rows if row.window.start_ms < next_through]
    return FinalStep(finals, next_through, partials)


def _session_cursor(windows: SessionWindows, sessions: list[WindowResult], bound: int) -> int:
    """The latest bucket start at or before ``bound`` that no session straddles and that
    follows only final sessions: the first bucket of the earliest open session, moved
    back while a session starts before it and has a bucket at or after it."""
    gap = windows.gap_ms
    spans = [
        (
            result.window.start_ms - result.window.start_ms % gap,
            (result.window.end_ms - gap) - (result.window.end_ms - gap) % gap,
            result.final,
        )
        for result in sessions
    ]
    cursor = min([bound, *(first for first, _, final in spans if not final)])
    spans.sort(key=lambda span: span[1], reverse=True)  # latest last bucket first
    moved = True
    while moved:
        moved = False
        for first, last, _ in spans:
            if last < cursor:
                break  # the rest end before the cursor too
            if first < cursor:
                cursor, moved = first, True
    return cursor


def top_keys(
    pipeline: Pipeline[Any], finals: Iterable[FinalRow], limit: int
) -> dict[str, list[tuple[str, float]]]:
    """Per numeric aggregate, the ``limit`` keys with the highest values among ``finals``
    (one window's final rows), highest first, ties by key."""
    by_aggregate: dict[str, list[tuple[str, float]]] = {}
    rows = list(finals)
    for name in pipeline.aggregate_names:
        ranked = rank_keys(((row.key, row.values.get(name)) for row in rows), limit)
        if ranked:
            by_aggregate[name] = ranked
    return by_aggregate


def rank_keys(values: Iterable[tuple[str, Any]], limit: int) -> list[tuple[str, float]]:
    """The ``limit`` (key, value) pairs with the highest numeric values, highest first,
    ties by key; values that are not numbers (None, NaN, lists) are not ranked."""
    ranked = [
        (key, value)
        for key, value in values
        if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    ]
    ranked.sort(key=lambda item: (-item[1], item[0]))
    return ranked[:limit]
