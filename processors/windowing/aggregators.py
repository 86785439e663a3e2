"""Mergeable aggregators: ``initial / add / merge / result`` plus a versioned stored form.

``merge`` is associative and commutative and ``initial()`` is its identity, so partial
aggregates from shards, batches and restarts combine in any grouping
(tests/unit/test_aggregators.py checks the laws with hypothesis).
"""

from __future__ import annotations

import math
from typing import Any, Generic, Protocol, TypeVar

import orjson

S = TypeVar("S")


class Aggregator(Protocol[S]):
    """The contract every aggregator meets. States are immutable values, except for
    aggregators that set ``mutable_state = True`` (sketches): their ``add`` may change the
    state in place and return it, and the engine gives every row a state of its own.
    ``merge`` never changes its inputs."""

    kind: str
    version: int

    def initial(self) -> S: ...

    def add(self, state: S, value: Any) -> S: ...

    def merge(self, left: S, right: S) -> S: ...

    def result(self, state: S) -> Any: ...

    def to_stored(self, state: S) -> Any:
        """A JSON-compatible form of ``state`` for storage."""
        ...

    def from_stored(self, stored: Any) -> S: ...


_INT64 = 2**63


def store_number(value: Any) -> Any:
    """JSON for a number state: integers beyond 64 bits and non-finite floats (a sum that
    overflowed) become tagged text, which JSON and orjson cannot hold otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        return {"int": str(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def load_number(stored: Any) -> Any:
    if isinstance(stored, dict):
        if "int" in stored:
            return int(stored["int"])
        return float(stored["float"])
    return stored


class _Plain(Generic[S]):
    """Aggregators whose state is a number (or None)."""

    def to_stored(self, state: S) -> Any:
        return store_number(state)

    def from_stored(self, stored: Any) -> S:
        return load_number(stored)  # type: ignore[no-any-return]


class Count(_Plain[int]):
    """The number of events."""

    kind = "count"
    version = 1
    inline_add = "{S} += 1"

    def initial(self) -> int:
        return 0

    def add(self, state: int, value: Any) -> int:
        return state + 1

    def merge(self, left: int, right: int) -> int:
        return left + right

    def result(self, state: int) -> int:
        return state


class Sum(_Plain[float]):
    """The sum of the values (events without one add nothing). Starts at 0.

    Integer sums stay exact, also beyond 64 bits.
    """

    kind = "sum"
    version = 1
    inline_add = "{S} += {V}"

    def initial(self) -> float:
        return 0

    def add(self, state: float, value: Any) -> float:
        return state + value  # type: ignore[no-any-return]

    def merge(self, left: float, right: float) -> float:
        return left + right

    def result(self, state: float) -> float:
        return state


class Min(_Plain["float | None"]):
    """The smallest value, or None when no event had one."""

    kind = "min"
    version = 1
    inline_add = "if {S} is None or {V} < {S}:\n    {S} = {V}"

    def initial(self) -> float | None:
        return None

    def add(self, state: float | None, value: Any) -> float | None:
        return value if state is None or value < state else state

    def merge(self, left: float | None, right: float | None) -> float | None:
        if left is None:
            return right
        if right is None:
            return left
        return min(left, right)

    def result(self, state: float | None) -> float | None:
        return state


class Max(_Plain["float | None"]):
    """The largest value, or None when no event had one."""

    kind = "max"
    version = 1
    inline_add = "if {S} is None or {V} > {S}:\n    {S} = {V}"

    def initial(self) -> float | None:
        return None

    def add(self, state: float | None, value: Any) -> float | None:
        return value if state is None or value > state else state

    def merge(self, left: float | None, right: float | None) -> float | None:
        if left is None:
            return right
        if right is None:
            return left
        return max(left, right)

    def result(self, state: float | None) -> float | None:
        return state


class Mean:
    """The arithmetic mean of the values, or None when no event had one.

    The state is (sum, count): means of parts do not merge, sums and counts do.
    """

    kind = "mean"
    version = 1

    def initial(self) -> tuple[float, int]:
        return (0, 0)

    def add(self, state: tuple[float, int], value: Any) -> tuple[float, int]:
        return (state[0] + value, state[1] + 1)

    def merge(self, left: tuple[float, int], right: tuple[float, int]) -> tuple[float, int]:
        return (left[0] + right[0], left[1] + right[1])

    def result(self, state: tuple[float, int]) -> float | None:
        total, count = state
        return total / count if count else None

    def to_stored(self, state: tuple[float, int]) -> Any:
        return [store_number(state[0]), state[1]]

    def from_stored(self, stored: Any) -> tuple[float, int]:
        return (load_number(stored[0]), int(stored[1]))


def _canonical(value: Any) -> bytes:
    """A total order for values with equal event times, whatever order they arrive in."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class _ByEventTime:
    """First or last value by event time. The value given to ``add`` is the pair
    ``(event time, value)``, e.g. ``AggregateSpec("entry_page", First(), lambda e:
    (e.ts_ms, e.page))``; the value must be JSON-compatible. Equal event times are broken
    by the values' canonical JSON, so the result does not depend on arrival order."""

    version = 1
    _earliest: bool

    def initial(self) -> tuple[int, Any] | None:
        return None

    def add(self, state: tuple[int, Any] | None, value: Any) -> tuple[int, Any] | None:
        ts, item = value
        return self.merge(state, (ts, item))

    def merge(
        self, left: tuple[int, Any] | None, right: tuple[int, Any] | None
    ) -> tuple[int, Any] | None:
        if left is None:
            return right
        if right is None:
            return left
        if left[0] != right[0]:
            left_wins = left[0] < right[0]
        else:
            left_wins = _canonical(left[1]) <= _canonical(right[1])
        return left if left_wins == self._earliest else right

    def result(self, state: tuple[int, Any] | None) -> Any:
        return None if state is None else state[1]

    def to_stored(self, state: tuple[int, Any] | None) -> Any:
        return None if state is None else [state[0], state[1]]

    def from_stored(self, stored: Any) -> tuple[int, Any] | None:
        return None if stored is None else (int(stored[0]), stored[1])


class First(_ByEventTime):
    """The value of the earliest event (by event time)."""

    kind = "first"
    _earliest = True


class Last(_ByEventTime):
    """The value of the latest event (by event time)."""

    kind = "last"
    _earliest = False
