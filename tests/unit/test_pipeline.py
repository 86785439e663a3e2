"""Pipelines are plain values; page-views is the one that ships (design.md section 8)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from processors.pipeline import AggregateSpec, Pipeline
from processors.pipelines import PIPELINES, UnknownPipeline, get_pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.aggregators import Count, Max, Min, Sum
from processors.windowing.sketches import ApproxDistinct, ApproxQuantile
from processors.windowing.windows import TumblingWindows
from schemas.page_views import PageView


def test_page_views_is_registered_with_its_contract() -> None:
    assert get_pipeline("page-views") is PAGE_VIEWS
    assert PIPELINES["page-views"] is PAGE_VIEWS
    assert sorted(PIPELINES) == ["device-sessions", "page-views"]
    assert PAGE_VIEWS.windows == TumblingWindows(60_000)
    assert PAGE_VIEWS.allowed_lateness_ms == 10_000
    assert PAGE_VIEWS.aggregate_names == [
        "views",
        "revenue",
        "latency_min",
        "latency_max",
        "latency_p99",
        "unique_users",
    ]
    kinds = [type(spec.aggregator) for spec in PAGE_VIEWS.aggregates]
    assert kinds == [Count, Sum, Min, Max, ApproxQuantile, ApproxDistinct]
    p99, users = PAGE_VIEWS.aggregates[4].aggregator, PAGE_VIEWS.aggregates[5].aggregator
    assert isinstance(p99, ApproxQuantile) and isinstance(users, ApproxDistinct)
    assert (p99.quantile, p99.relative_accuracy) == (0.99, 0.01)
    assert users.precision == 12  # 4,096 registers: about 1.6% standard error


def test_page_views_keys_by_page_and_feeds_each_aggregate() -> None:
    event = PageView("e1", 1_000, "/home", "u1", latency_ms=12.0, value=3.5)
    assert PAGE_VIEWS.key(event) == "/home"
    assert PAGE_VIEWS.event_time(event) == 1_000
    feeds = {
        spec.name: (event if spec.value is None else spec.value(event))
        for spec in PAGE_VIEWS.aggregates
    }
    assert feeds == {
        "views": event,
        "revenue": 3.5,
        "latency_min": 12.0,
        "latency_max": 12.0,
        "latency_p99": 12.0,
        "unique_users": "u1",
    }


def test_page_views_without_user_or_latency_feeds_nothing_to_those_aggregates() -> None:
    """None means "skip this event" to the engine: no user, no latency, no contribution."""
    event = PageView("e1", 1_000, "/home")
    feeds = {
        spec.name: spec.value(event) for spec in PAGE_VIEWS.aggregates if spec.value is not None
    }
    assert feeds == {
        "revenue": None,
        "latency_min": None,
        "latency_max": None,
        "latency_p99": None,
        "unique_users": None,
    }


def test_an_unknown_pipeline_names_the_known_ones() -> None:
    with pytest.raises(UnknownPipeline) as caught:
        get_pipeline("page-veiws")
    assert str(caught.value) == (
        "unknown pipeline 'page-veiws'; known pipelines: device-sessions, page-views"
    )
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
