"""The compiled fold (one generated function per pipeline) must add events exactly as the
aggregators' own ``add`` methods do, one call at a time."""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import AggregateSpec
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.aggregators import Count, Max, Min, Sum
from processors.windowing.fold import compile_fold, generic_fold
from schemas.page_views import PageView


class Longest:
    """A user aggregator with no inline form: the compiled fold must call its ``add``."""

    kind = "longest"
    version = 1

    def initial(self) -> str:
        return ""

    def add(self, state: str, value: Any) -> str:
        return value if len(value) > len(state) else state

    def merge(self, left: str, right: str) -> str:
        return self.add(left, right)

    def result(self, state: str) -> str:
        return state

    def to_stored(self, state: str) -> str:
        return state

    def from_stored(self, stored: Any) -> str:
        return str(stored)


_numbers = st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1e6, 1e6))
_views = st.builds(
    PageView,
    event_id=st.text(max_size=3),
    ts_ms=st.integers(0, 10**6),
    page=st.text(min_size=1, max_size=8),
    user_id=st.none(),
    latency_ms=_numbers,
    value=_numbers,
)


def fold_all(fold: Any, specs: Any, events: list[Any]) -> list[Any]:
    states = [spec.aggregator.initial() for spec in specs]
    for event in events:
        fold(states, event)
    return states


@given(st.lists(_views, max_size=30))
@settings(max_examples=200)
def test_page_views_fold_equals_the_generic_fold(events: list[PageView]) -> None:
    specs = PAGE_VIEWS.aggregates
    assert fold_all(compile_fold(specs), specs, events) == fold_all(
        generic_fold(specs), specs, events
    )


@given(st.lists(st.tuples(st.text(max_size=5), _numbers), max_size=30))
@settings(max_examples=200)
def test_user_aggregators_and_shared_extractors(events: list[tuple[str, Any]]) -> None:
    number = itemgetter(1)
    specs = (
        AggregateSpec("n", Count()),
        AggregateSpec("longest", Longest(), itemgetter(0)),
        AggregateSpec("low", Min(), number),
        AggregateSpec("high", Max(), number),
        AggregateSpec("total", Sum(), number),
    )
    assert fold_all(compile_fold(specs), specs, events) == fold_all(
        generic_fold(specs), specs, events
    )


def test_the_generated_source_is_readable() -> None:
    fold = compile_fold(PAGE_VIEWS.aggregates)
    source = fold.source  # type: ignore[attr-defined]
    assert source.startswith("def fold(states, event):")
    assert source.count("get_2(event)") == 1, "latency is extracted once for min and max"
    assert compile_fold(()).source == "def fold(states, event):\n    pass\n"  # type: ignore[attr-defined]


def test_attrgetter_values_none_are_skipped() -> None:
    specs = (AggregateSpec("total", Sum(), attrgetter("value")),)
    states = [0]
    compile_fold(specs)(states, PageView("e", 1, "/", value=None))
    assert states == [0]


def test_none_values_are_skipped_for_every_aggregator() -> None:
    """Count with a value function counts the events that have a value, as its add would
    be fed them: the compiled fold must skip None for templates without {V} too."""
    latency = attrgetter("latency_ms")
    specs = (AggregateSpec("with_latency", Count(), latency), AggregateSpec("events", Count()))
    events = [PageView("a", 1, "/", latency_ms=None), PageView("b", 2, "/", latency_ms=5.0)]
    assert fold_all(compile_fold(specs), specs, events) == [1, 2]
    assert fold_all(generic_fold(specs), specs, events) == [1, 2]
