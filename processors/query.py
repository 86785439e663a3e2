"""Reading aggregates: partial rows merged across shards on read (design.md section 4)."""

from __future__ import annotations

from typing import Any

from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
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
    Progress is read before rows, so a window reported final has all its rows.
    """
    shards = store.read_progress(pipeline.name)
    if isinstance(pipeline.windows, SessionWindows):
        rows = _session_rows(store, pipeline, pipeline.windows, key, since_ms, until_ms)
        return [
            result
            for result in merge_rows(pipeline, rows, shards)
            if (since_ms is None or result.window.end_ms > since_ms)
            and (until_ms is None or result.window.start_ms < until_ms)
        ]
    size = pipeline.windows.size_ms
    start_from = None if since_ms is None else since_ms - size + 1
    rows = store.read_rows(pipeline.name, key, start_from, until_ms)
    return merge_rows(pipeline, rows, shards)


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
