"""What a pipeline is: a schema, a key, an event time, windows, lateness and aggregates.

Pure: pipelines are plain values that the engine, the runner, replay and query share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from processors.alerts import AlertRule, check_rules, rule
from processors.windowing.aggregators import Aggregator, Max, Min
from processors.windowing.windows import SessionWindows, Windows

E = TypeVar("E")

SESSION_BOUNDS_PREFIX = "_session"
SESSION_FIRST = "_session_first_ms"
SESSION_LAST = "_session_last_ms"


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
class Sinks:
    """Where a pipeline's results, alerts and rejected events go. None means the
    configured default (``shardflow-aggregates``, ``shardflow-alerts`` and
    ``shardflow-dead-letters``, or what --table, --alert-topic, --dead-letter-queue and
    their environment variables name: those, when given, apply to every pipeline)."""

    results_table: str | None = None
    dead_letter_queue: str | None = None
    alert_topic: str | None = None
    alerts: tuple[AlertRule, ...] = ()
    """Rules checked on every final window (``rule("views > 1000")``): each breach is
    published once to the alert topic."""
    result_ttl: timedelta | None = None
    """How long results live after their window ends (DynamoDB TTL on final rows, top
    keys, the window index and sent-alert records); None keeps them. Partial rows of
    final windows expire an hour after their final row is written either way."""

    def __post_init__(self) -> None:
        # Rules may be given as text: Sinks(alerts=("views > 1000",)) or one rule alone.
        given: Any = self.alerts
        if isinstance(given, AlertRule | str):
            given = (given,)
        if not isinstance(given, tuple | list):
            raise TypeError(
                f'sinks.alerts must be a tuple of rules (rule("views > 1000")) or of rule '
                f"texts, not {type(given).__name__}"
            )
        rules = []
        for item in given:
            parsed = rule(item) if isinstance(item, str) else item
            if not isinstance(parsed, AlertRule):
                raise TypeError(
                    f'sinks.alerts holds {item!r}: each must be a rule (rule("views > 1000")) '
                    "or a rule's text"
                )
            rules.append(parsed)
        object.__setattr__(self, "alerts", tuple(rules))


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
    source: str | None = None
    """The Kinesis stream the pipeline reads; None means the configured stream
    (``clickstream`` unless --stream or SHARDFLOW_STREAM names another)."""
    sinks: Sinks = Sinks()
    idle_timeout_ms: int | None = 60_000
    """A shard that has sent nothing for this long (wall-clock, while the runner is at
    its tip) is idle: it holds no window open until it sends again, and its events for
    windows that became final meanwhile are late. None: shards are never idle."""
    max_future_ms: int | None = 3_600_000
    """Events stamped more than this after their record arrived in Kinesis are invalid: one
    bad producer clock would otherwise push the shard's watermark ahead and make every
    later event late. None turns the check off."""

    def __post_init__(self) -> None:
        if not self.name or "#" in self.name:
            raise ValueError(f"pipeline name must be non-empty and contain no '#': {self.name!r}")
        if self.allowed_lateness_ms < 0:
            raise ValueError("allowed lateness must be >= 0")
        for what, name in (
            ("source", self.source),
            ("sinks.results_table", self.sinks.results_table),
            ("sinks.dead_letter_queue", self.sinks.dead_letter_queue),
            ("sinks.alert_topic", self.sinks.alert_topic),
        ):
            if name is not None and not name.strip():
                raise ValueError(f"{what} must be a name, or None for the configured one")
        ttl = self.sinks.result_ttl
        if ttl is not None and ttl.total_seconds() < 1:
            raise ValueError(f"sinks.result_ttl must be at least one second, got {ttl}")
        if self.idle_timeout_ms is not None and self.idle_timeout_ms <= 0:
            raise ValueError("idle timeout must be positive (or None for never)")
        names = [spec.name for spec in self.aggregates]
        if len(set(names)) != len(names):
            raise ValueError(f"aggregate names must be unique: {names}")
        reserved = [name for name in names if name.startswith(SESSION_BOUNDS_PREFIX)]
        if reserved:
            raise ValueError(
                f"aggregate names starting with {SESSION_BOUNDS_PREFIX!r} are reserved: {reserved}"
            )
        check_rules(
            self.name,
            self.sinks.alerts,
            [(spec.name, spec.aggregator) for spec in self.aggregates],
        )

    @property
    def result_ttl_s(self) -> int | None:
        """``sinks.result_ttl`` in whole seconds (None: results are kept)."""
        ttl = self.sinks.result_ttl
        return None if ttl is None else int(ttl.total_seconds())

    @property
    def aggregate_names(self) -> list[str]:
        return [spec.name for spec in self.aggregates]

    @property
    def stored_aggregates(self) -> tuple[AggregateSpec[E], ...]:
        """What a partial row stores: the aggregates, and for session windows the first
        and last event time of the bucket, which decide where sessions begin and end."""
        if not isinstance(self.windows, SessionWindows):
            return self.aggregates
        return (
            *self.aggregates,
            AggregateSpec(SESSION_FIRST, Min(), self.event_time),
            AggregateSpec(SESSION_LAST, Max(), self.event_time),
        )
