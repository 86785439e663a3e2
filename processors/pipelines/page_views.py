"""page-views: views, revenue and latency per page in 60 s tumbling windows."""

from __future__ import annotations

from processors.pipeline import AggregateSpec, Pipeline
from processors.windowing.aggregators import Count, Max, Min, Sum
from processors.windowing.windows import TumblingWindows
from schemas.page_views import PageView, decode_page_view


def _page(event: PageView) -> str:
    return event.page


def _ts(event: PageView) -> int:
    return event.ts_ms


def _value(event: PageView) -> float | None:
    return event.value


def _latency(event: PageView) -> float | None:
    return event.latency_ms


PAGE_VIEWS: Pipeline[PageView] = Pipeline(
    name="page-views",
    description="Views, revenue and latency per page, 60 s tumbling windows, 10 s lateness",
    decode=decode_page_view,
    key=_page,
    event_time=_ts,
    windows=TumblingWindows(size_ms=60_000),
    allowed_lateness_ms=10_000,
    aggregates=(
        AggregateSpec("views", Count()),
        AggregateSpec("revenue", Sum(), _value),
        AggregateSpec("latency_min", Min(), _latency),
        AggregateSpec("latency_max", Max(), _latency),
    ),
)
