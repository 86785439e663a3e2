"""Pipelines are plain values; page-views is the one that ships (design.md section 8)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from processors.pipeline import AggregateSpec, Pipeline
from processors.pipelines import PIPELINES, UnknownPipeline, get_pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.aggregators import Count, Max, Min, Sum
from processors.windowing.windows import TumblingWindows
from schemas.page_views import PageView


def test_page_views_is_registered_with_its_contract() -> None:
    assert get_pipeline("page-views") is PAGE_VIEWS
    assert PIPELINES == {"page-views": PAGE_VIEWS}
    assert PAGE_VIEWS.windows == TumblingWindows(60_000)
    assert PAGE_VIEWS.allowed_lateness_ms == 10_000
    assert PAGE_VIEWS.aggregate_names == ["views", "revenue", "latency_min", "latency_max"]
    kinds = [type(spec.aggregator) for spec in PAGE_VIEWS.aggregates]
    assert kinds == [Count, Sum, Min, Max]


def test_page_views_keys_by_page_and_feeds_each_aggregate() -> None:
    event = PageView("e1", 1_000, "/home", "u1", latency_ms=12.0, value=3.5)
    assert PAGE_VIEWS.key(event) == "/home"
    assert PAGE_VIEWS.event_time(event) == 1_000
    feeds = {
        spec.name: (event if spec.value is None else spec.value(event))
        for spec in PAGE_VIEWS.aggregates
    }
    assert feeds == {"views": event, "revenue": 3.5, "latency_min": 12.0, "latency_max": 12.0}


def test_an_unknown_pipeline_names_the_known_ones() -> None:
    with pytest.raises(UnknownPipeline) as caught:
        get_pipeline("page-veiws")
    assert str(caught.value) == "unknown pipeline 'page-veiws'; known pipelines: page-views"
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"name": ""}, "name", id="empty name"),
        pytest.param({"name": "page#views"}, "'#'", id="name with the key separator"),
        pytest.param({"allowed_lateness_ms": -1}, "lateness", id="negative lateness"),
        pytest.param(
            {"aggregates": (AggregateSpec("n", Count()), AggregateSpec("n", Sum()))},
            "unique",
            id="duplicate aggregate names",
        ),
    ],
)
def test_a_pipeline_definition_is_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(PAGE_VIEWS, **changes)


def test_zero_lateness_is_allowed() -> None:
    strict: Pipeline[PageView] = replace(PAGE_VIEWS, name="strict", allowed_lateness_ms=0)
    assert strict.allowed_lateness_ms == 0
