"""What a pipeline is: a schema, a key, an event time, windows, lateness and aggregates.

Pure: pipelines are plain values that the engine, the runner, replay and query share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from processors.windowing.aggregators import Aggregator
from processors.windowing.windows import Windows

E = TypeVar("E")


@dataclass(frozen=True)
class AggregateSpec(Generic[E]):
    """One output column: ``aggregator`` fed with ``value(event)``.

    ``value`` returning None means the event has nothing for this aggregate (a page view
    without ``latency_ms`` does not move ``latency_min``). Without ``value`` the aggregator
    is fed the event itself (for counts).
    """

    name: str
    aggregator: Aggregator[Any]
    value: Callable[[E], Any] | None = None


@dataclass(frozen=True)
class Pipeline(Generic[E]):
    """A windowed aggregation of one stream's events."""

    name: str
    description: str
    decode: Callable[[bytes], E]
    key: Callable[[E], str]
    event_time: Callable[[E], int]
    windows: Windows
    allowed_lateness_ms: int
    aggregates: tuple[AggregateSpec[E], ...]
    max_future_ms: int | None = 3_600_000
    """Events stamped more than this after their record arrived in Kinesis are invalid: one
    bad producer clock would otherwise push the shard's watermark ahead and make every
    later event late. None turns the check off."""

    def __post_init__(self) -> None:
        if not self.name or "#" in self.name:
            raise ValueError(f"pipeline name must be non-empty and contain no '#': {self.name!r}")
        if self.allowed_lateness_ms < 0:
            raise ValueError("allowed lateness must be >= 0")
        names = [spec.name for spec in self.aggregates]
        if len(set(names)) != len(names):
            raise ValueError(f"aggregate names must be unique: {names}")

    @property
    def aggregate_names(self) -> list[str]:
        return [spec.name for spec in self.aggregates]
