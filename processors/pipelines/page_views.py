"""page-views: views, revenue and latency per page in 60 s tumbling windows."""

from __future__ import annotations

from operator import attrgetter

from processors.pipeline import AggregateSpec, Pipeline
from processors.windowing.aggregators import Count, Max, Min, Sum
from processors.windowing.windows import TumblingWindows
from schemas.page_views import PageView, decode_page_view

# attrgetter is a C-level callable: the engine calls these once per event and aggregate.
_page = attrgetter("page")
_ts = attrgetter("ts_ms")
_value = attrgetter("value")
_latency = attrgetter("latency_ms")

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
