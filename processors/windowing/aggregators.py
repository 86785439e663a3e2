"""Mergeable aggregators: ``initial / add / merge / result`` plus a versioned stored form.

``merge`` is associative and commutative and ``initial()`` is its identity, so partial
aggregates from shards, batches and restarts combine in any grouping
(tests/unit/test_aggregators.py checks the laws with hypothesis).
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

S = TypeVar("S")


class Aggregator(Protocol[S]):
    """The contract every aggregator meets. States are immutable values."""

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


class _Plain(Generic[S]):
    """Aggregators whose state is already a JSON scalar."""

    def to_stored(self, state: S) -> Any:
        return state

    def from_stored(self, stored: Any) -> S:
        return stored  # type: ignore[no-any-return]


class Count(_Plain[int]):
    """The number of events."""

    kind = "count"
    version = 1

    def initial(self) -> int:
        return 0

    def add(self, state: int, value: Any) -> int:
        return state + 1

    def merge(self, left: int, right: int) -> int:
        return left + right

    def result(self, state: int) -> int:
        return state


_INT64 = 2**63


class Sum(_Plain[float]):
    """The sum of the values (events without one add nothing). Starts at 0.

    Integer sums stay exact; those beyond 64 bits are stored as decimal text.
    """

    kind = "sum"
    version = 1

    def to_stored(self, state: float) -> Any:
        if isinstance(state, int) and not -_INT64 <= state < _INT64:
            return {"int": str(state)}
        return state

    def from_stored(self, stored: Any) -> float:
        if isinstance(stored, dict):
            return int(stored["int"])
        return stored  # type: ignore[no-any-return]

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
