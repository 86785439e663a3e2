"""The pipelines the benchmarks time.

The speed goal (core/plain 0.5 or better) is stated for tumbling windows with count, sum,
min and max: the work the plain loop does by hand. :data:`PLAIN_PAGE_VIEWS` is the shipped
page-views pipeline cut to exactly those four aggregates, and gives the headline figures.
The shipped pipeline itself adds two sketches (``latency_p99``, ``unique_users``); the
benchmarks report it next to the plain one, "with sketches", against the same plain loop.
"""

from __future__ import annotations

from dataclasses import replace

from processors.pipeline import Pipeline, Sinks
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.windows import HoppingWindows
from schemas.page_views import PageView

PLAIN_AGGREGATES = ["views", "revenue", "latency_min", "latency_max"]

PLAIN_PAGE_VIEWS: Pipeline[PageView] = replace(
    PAGE_VIEWS,
    name="page-views-plain",
    description="page-views with count, sum, min and max only (the benchmark's yardstick work)",
    aggregates=PAGE_VIEWS.aggregates[: len(PLAIN_AGGREGATES)],
    sinks=Sinks(),  # page-views' alert rule is on latency_p99, which this copy lacks
)
if PLAIN_PAGE_VIEWS.aggregate_names != PLAIN_AGGREGATES:  # pragma: no cover
    raise RuntimeError(f"page-views no longer starts with {PLAIN_AGGREGATES}")

HOPPING: Pipeline[PageView] = replace(
    PLAIN_PAGE_VIEWS,
    name="page-views-plain-hopping",
    windows=HoppingWindows(size_ms=60_000, step_ms=20_000),
)

WITH_SKETCHES = PAGE_VIEWS
"""The shipped pipeline: the four plain aggregates, ``latency_p99`` and ``unique_users``."""
