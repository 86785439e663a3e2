"""The top keys of one window by a numeric aggregate.

A final window's top keys were ranked once, by the finalizer, and stored in one item: one
read. A window that is still open (or that the finalizer has not reached, or a ``k``
beyond what it stored) is ranked on read from every key's result in the window, through
the window index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.finalizer import TOP_KEYS
from processors.pipeline import Pipeline
from processors.query import END_OF_TIME, window_results
from processors.query_pages import QueryError, window_step_ms
from processors.sinks.ports import FinalStore, PartialStore
from processors.windowing.finals import rank_keys
from processors.windowing.results import WindowResult, final_frontier
from processors.windowing.top_k import TopK
from processors.windowing.windows import SessionWindows, Window

MAX_K = 1_000


@dataclass(frozen=True, slots=True)
class TopKeys:
    pipeline: str
    aggregate: str
    window: Window
    final: bool
    keys: int
    """How many keys the window has (ranked or not)."""
    top: list[tuple[str, float]]
    """At most k (key, value) pairs, highest first, ties by key."""


def numeric_aggregates(pipeline: Pipeline[Any]) -> list[str]:
    """The aggregates keys can be ranked by (everything but top-k lists)."""
    return [spec.name for spec in pipeline.aggregates if not isinstance(spec.aggregator, TopK)]


def check_rankable(pipeline: Pipeline[Any], aggregate: str, k: int) -> None:
    if isinstance(pipeline.windows, SessionWindows):
        raise QueryError(
            f"{pipeline.name!r} has session windows, which are per key: there is no "
            "window shared by its keys to rank; query its sessions instead"
        )
    numeric = numeric_aggregates(pipeline)
    if aggregate not in numeric:
        known = ", ".join(numeric)
        what = "is not a number" if aggregate in pipeline.aggregate_names else "is unknown"
        raise QueryError(
            f"aggregate {aggregate!r} of {pipeline.name!r} {what}; rank by one of: {known}"
        )
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K:,}, got {k}")


def window_start_at(pipeline: Pipeline[Any], at_ms: int) -> int:
    """The start of the latest window containing ``at_ms``."""
    step = window_step_ms(pipeline)
    return at_ms - at_ms % step


def top_keys(
    store: Any,
    pipeline: Pipeline[Any],
    aggregate: str,
    k: int = 10,
    at_ms: int | None = None,
) -> TopKeys | None:
    """The top ``k`` keys by ``aggregate`` of the window containing ``at_ms`` (the latest
    starting one, for hopping windows), or of the latest window with data when ``at_ms``
    is None. None: that window has no data."""
    check_rankable(pipeline, aggregate, k)
    finals: FinalStore = store
    partials: PartialStore = store
    if at_ms is None:
        start = finals.latest_window_start(pipeline.name, END_OF_TIME)
        if start is None:
            return None
    else:
        start = window_start_at(pipeline, at_ms)
    window = pipeline.windows.window_starting(start)
    shards = partials.read_progress(pipeline.name)
    frontier = final_frontier(shards, pipeline.allowed_lateness_ms)
    final = frontier is not None and window.end_ms <= frontier
    through = finals.finalized_through(pipeline.name)
    if final and k <= TOP_KEYS and through is not None and start < through:
        stored = finals.read_top(pipeline.name, start, aggregate)
        if stored is not None:
            ranked, keys = stored
            return TopKeys(pipeline.name, aggregate, window, True, keys, ranked[:k])
    results = window_results(store, pipeline, start, shards)
    if not results:
        return None
    return TopKeys(
        pipeline.name,
        aggregate,
        window,
        all(result.final for result in results),
        len(results),
        rank(results, aggregate, k),
    )


def rank(results: list[WindowResult], aggregate: str, k: int) -> list[tuple[str, float]]:
    """The ``k`` keys with the highest numeric ``aggregate``, in the finalizer's order."""
    return rank_keys(((result.key, result.values.get(aggregate)) for result in results), k)
