"""Reading aggregates: partial rows merged across shards on read (design.md section 4).

Every read goes through a key or the window index, never a Scan, when the store has the
index (:class:`~processors.sinks.ports.FinalStore`): one key over a time range is a Query
on its final rows and one on its partial rows; all keys of a window are the index's keys
of that window, then their rows. A store without the index (a bare partial store) is
read whole for queries without a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
from processors.windowing.engine import ShardProgress
from processors.windowing.finals import FinalRow, stored_result
from processors.windowing.results import WindowResult, final_frontier, merge_rows
from processors.windowing.rows import StoredRow
from processors.windowing.windows import SessionWindows
from schemas.timestamps import MAX_EPOCH_MS

END_OF_TIME = MAX_EPOCH_MS + 1
"""No window starts at or after this: storage keys hold 13 digits."""


def query_windows(
    store: PartialStore,
    pipeline: Pipeline[Any],
    key: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[WindowResult]:
    """Windows of ``pipeline`` that overlap ``[since_ms, until_ms)``, merged over shards,
    sorted by key, then window start.

    ``final`` is true only for windows closed on every shard the runner has registered.
    Progress is read before rows, so a window reported final has all its rows. Windows
    that have a final row are read from it (their partial rows may have expired).
    """
    shards = store.read_progress(pipeline.name)
    if key is None and has_index(store):
        starts = overlapping_starts(store, pipeline, since_ms, until_ms)
        if isinstance(pipeline.windows, SessionWindows):
            results = sessions_of_keys(store, pipeline, starts, since_ms, until_ms, shards)
        else:
            results = [
                result
                for start in starts
                for result in window_results(store, pipeline, start, shards)
            ]
        return sorted(results, key=lambda r: (r.key, r.window.start_ms))
    return keyed_windows(store, pipeline, key, since_ms, until_ms, shards)


def has_index(store: object) -> bool:
    """True when ``store`` keeps the window index (a FinalStore)."""
    return hasattr(store, "window_starts") and hasattr(store, "window_rows")


def overlapping_starts(
    store: Any, pipeline: Pipeline[Any], since_ms: int | None, until_ms: int | None
) -> list[int]:
    """Starts of the indexed windows (session buckets) that may hold results overlapping
    ``[since_ms, until_ms)``, ascending: one Query on the index. For sessions, buckets up
    to two gaps before the range too, since a session's end lies a gap past its last
    event."""
    reach = pipeline.windows.size_ms
    if isinstance(pipeline.windows, SessionWindows):
        reach = 2 * pipeline.windows.gap_ms
    low = 0 if since_ms is None else max(0, since_ms - reach + 1)
    high = END_OF_TIME if until_ms is None else min(END_OF_TIME, max(0, until_ms))
    starts: list[int] = store.window_starts(pipeline.name, low, high)
    return starts


def window_results(
    store: Any, pipeline: Pipeline[Any], window_start_ms: int, shards: Sequence[ShardProgress]
) -> list[WindowResult]:
    """Every key's result for the window (not session) starting at ``window_start_ms``,
    sorted by key, through the window index. Keys with a final row are read from it (their
    partial rows may have expired, and are not merged again); the others are merged from
    their partial rows. A key without a final row behind the finalizer's cursor is rare
    but possible (rows written after the pipeline's lateness was raised), so partial rows
    are read for final windows too: they expire an hour after their final row."""
    if isinstance(pipeline.windows, SessionWindows):
        raise ValueError(f"{pipeline.name!r} has session windows: they are read by key")
    frontier = final_frontier(shards, pipeline.allowed_lateness_ms)
    window = pipeline.windows.window_starting(window_start_ms)
    finals: list[FinalRow] = []
    if frontier is not None and window.end_ms <= frontier:
        finals = read_final_values(store, pipeline, None, window_start_ms, window_start_ms + 1)
    rows = _not_final(store.window_rows(pipeline.name, window_start_ms), finals)
    return _with_finals(pipeline, merge_rows(pipeline, rows, shards), finals, False)


def _not_final(rows: list[StoredRow], finals: Sequence[FinalRow]) -> list[StoredRow]:
    """The partial rows of windows (not sessions) that have no final row."""
    if not finals:
        return rows
    done = {(final.key, final.window_start_ms) for final in finals}
    return [row for row in rows if (row.key, row.window.start_ms) not in done]


def keyed_windows(
    store: PartialStore,
    pipeline: Pipeline[Any],
    key: str | None,
    since_ms: int | None,
    until_ms: int | None,
    shards: Sequence[ShardProgress],
) -> list[WindowResult]:
    """:func:`query_windows` for one key (or, without the index, for every key), with
    the shards' progress already read."""
    read_finals = getattr(store, "read_finals", None)
    if isinstance(pipeline.windows, SessionWindows):
        windows = pipeline.windows
        rows = _session_rows(store, pipeline, windows, key, since_ms, until_ms)
        # A final session may reach far into the range from before it, and its buckets
        # may have expired: for one key, read all of its final sessions up to the range's
        # end (one Query); without a key, those starting up to 4 gaps before the range.
        low = None
        if key is None and since_ms is not None:
            low = min([since_ms - 4 * windows.gap_ms, *(row.window.start_ms for row in rows)])
        finals = read_finals(pipeline.name, key, low, until_ms) if read_finals else []
        results = _with_finals(pipeline, merge_rows(pipeline, rows, shards), finals, True)
        return [
            result
            for result in results
            if (since_ms is None or result.window.end_ms > since_ms)
            and (until_ms is None or result.window.start_ms < until_ms)
        ]
    size = pipeline.windows.size_ms
    start_from = None if since_ms is None else since_ms - size + 1
    return starting_between(store, pipeline, key, start_from, until_ms, shards)


def starting_between(
    store: PartialStore,
    pipeline: Pipeline[Any],
    key: str | None,
    start_from_ms: int | None,
    start_before_ms: int | None,
    shards: Sequence[ShardProgress],
) -> list[WindowResult]:
    """Windows (not sessions) of one key starting in ``[start_from_ms, start_before_ms)``:
    a Query on its partial rows and one on its final rows."""
    read_finals = getattr(store, "read_finals", None)
    if read_finals is None:
        rows = store.read_rows(pipeline.name, key, start_from_ms, start_before_ms)
        return merge_rows(pipeline, rows, shards)
    # Windows with a final row are read from it: their partial rows (until they expire,
    # an hour after) are not merged again.
    finals = read_final_values(store, pipeline, key, start_from_ms, start_before_ms)
    rows = _not_final(store.read_rows(pipeline.name, key, start_from_ms, start_before_ms), finals)
    return _with_finals(pipeline, merge_rows(pipeline, rows, shards), finals, False)


def read_final_values(
    store: Any,
    pipeline: Pipeline[Any],
    key: str | None,
    start_from_ms: int | None,
    start_before_ms: int | None,
) -> list[FinalRow]:
    """Final rows as queries need them: their values, not their states, except for rows
    whose values lack an aggregate (written before it was added), read again whole so that
    :func:`stored_result` can decode them."""
    rows: list[FinalRow] = store.read_finals(
        pipeline.name, key, start_from_ms, start_before_ms, with_states=False
    )
    names = pipeline.aggregate_names
    for index, row in enumerate(rows):
        if not all(name in row.values for name in names):
            (whole,) = store.read_finals(pipeline.name, row.key, row.sort_ms, row.sort_ms + 1)
            rows[index] = whole
    return rows


def sessions_of_keys(
    store: Any,
    pipeline: Pipeline[Any],
    bucket_starts: Sequence[int],
    since_ms: int | None,
    until_ms: int | None,
    shards: Sequence[ShardProgress],
) -> list[WindowResult]:
    """Whole sessions overlapping the range of every key the index lists in the buckets
    starting at ``bucket_starts``: one keyed read each (a session can reach any distance
    past the buckets the index found)."""
    keys = sorted(
        {key for start in bucket_starts for key in store.window_keys(pipeline.name, start)}
    )
    return [
        result
        for key in keys
        for result in keyed_windows(store, pipeline, key, since_ms, until_ms, shards)
    ]


def _with_finals(
    pipeline: Pipeline[Any], merged: list[WindowResult], finals: list[FinalRow], sessions: bool
) -> list[WindowResult]:
    """Final rows in place of what the partial rows give for the same windows: once
    finalized, the partial rows may expire. For sessions, a final session replaces every
    partial session of its key that it overlaps (some of its buckets may be gone)."""
    if not finals:
        return merged
    final_results = [stored_result(pipeline, row) for row in finals]
    if sessions:
        by_key: dict[str, list[WindowResult]] = {}
        for result in final_results:
            by_key.setdefault(result.key, []).append(result)
        kept = [
            result
            for result in merged
            if not any(
                final.window.start_ms < result.window.end_ms
                and result.window.start_ms < final.window.end_ms
                for final in by_key.get(result.key, ())
            )
        ]
    else:
        done = {(result.key, result.window.start_ms) for result in final_results}
        kept = [result for result in merged if (result.key, result.window.start_ms) not in done]
    return sorted(kept + final_results, key=lambda r: (r.key, r.window.start_ms))


def _session_rows(
    store: PartialStore,
    pipeline: Pipeline[Any],
    windows: SessionWindows,
    key: str | None,
    since_ms: int | None,
    until_ms: int | None,
) -> list[StoredRow]:
    """The buckets of every session that overlaps ``[since_ms, until_ms)``, whole.

    A session can reach any distance past the range on either side, so the read widens
    (doubling) while a bucket within a gap of its edge could continue a session there.
    Without a key the read is a scan of the pipeline's rows anyway, so it reads them all.
    """
    if key is None:
        return store.read_rows(pipeline.name)
    gap = windows.gap_ms
    low = None if since_ms is None else max(0, since_ms - since_ms % gap - gap)
    high = None if until_ms is None else min(END_OF_TIME, until_ms - until_ms % gap + 2 * gap)
    reach = 4 * gap
    while True:
        rows = store.read_rows(pipeline.name, key, low, high)
        starts = [row.window.start_ms for row in rows]
        widen_low = low is not None and low > 0 and any(start < low + gap for start in starts)
        widen_high = (
            high is not None and high < END_OF_TIME and any(start >= high - gap for start in starts)
        )
        if not (widen_low or widen_high):
            return rows
        if widen_low and low is not None:
            low = max(0, low - reach)
        if widen_high and high is not None:
            high = min(END_OF_TIME, high + reach)
        reach *= 2
