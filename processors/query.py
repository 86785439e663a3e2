"""Reading aggregates: partial rows merged across shards on read (design.md section 4)."""

from __future__ import annotations

from typing import Any

from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
from processors.windowing.finals import FinalRow, final_result
from processors.windowing.results import WindowResult, merge_rows
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
    """Windows of ``pipeline`` that overlap ``[since_ms, until_ms)``, merged over shards.

    ``final`` is true only for windows closed on every shard the runner has registered.
    Progress is read before rows, so a window reported final has all its rows. Windows
    that have a final row are read from it (their partial rows may have expired).
    """
    shards = store.read_progress(pipeline.name)
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
    rows = store.read_rows(pipeline.name, key, start_from, until_ms)
    finals = read_finals(pipeline.name, key, start_from, until_ms) if read_finals else []
    return _with_finals(pipeline, merge_rows(pipeline, rows, shards), finals, False)


def _with_finals(
    pipeline: Pipeline[Any], merged: list[WindowResult], finals: list[FinalRow], sessions: bool
) -> list[WindowResult]:
    """Final rows in place of what the partial rows give for the same windows: once
    finalized, the partial rows may expire. For sessions, a final session replaces every
    partial session of its key that it overlaps (some of its buckets may be gone)."""
    if not finals:
        return merged
    final_results = [final_result(pipeline, row) for row in finals]
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
