"""Reading aggregates: partial rows merged across shards on read (design.md section 4)."""

from __future__ import annotations

from typing import Any

from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
from processors.windowing.results import WindowResult, merge_rows


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
    size = pipeline.windows.size_ms
    start_from = None if since_ms is None else since_ms - size + 1
    rows = store.read_rows(pipeline.name, key, start_from, until_ms)
    return merge_rows(pipeline, rows, shards)
