"""Window assignment: pure functions of event time. Windows are half-open [start, end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Window(NamedTuple):
    """A half-open interval of event time, ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int


_CACHE_LIMIT = 4_096


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed-size, non-overlapping windows aligned to the epoch."""

    size_ms: int
    _assigned: dict[int, tuple[Window, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Window tuples by start: events arrive in time order, so most hit a recent window."""

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be positive, got {self.size_ms} ms")

    def assign(self, ts_ms: int) -> tuple[Window, ...]:
        """The windows an event at ``ts_ms`` belongs to (exactly one)."""
        start = ts_ms - ts_ms % self.size_ms
        windows = self._assigned.get(start)
        if windows is None:
            if len(self._assigned) >= _CACHE_LIMIT:
                self._assigned.clear()
            windows = self._assigned[start] = (Window(start, start + self.size_ms),)
        return windows

    def describe(self) -> str:
        return f"tumbling {self.size_ms} ms"
