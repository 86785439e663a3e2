"""Window assignment: pure functions of event time. Windows are half-open [start, end)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Window(NamedTuple):
    """A half-open interval of event time, ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed-size, non-overlapping windows aligned to the epoch."""

    size_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0:
            raise ValueError(f"window size must be positive, got {self.size_ms} ms")

    def assign(self, ts_ms: int) -> tuple[Window, ...]:
        """The windows an event at ``ts_ms`` belongs to (exactly one)."""
        start = ts_ms - ts_ms % self.size_ms
        return (Window(start, start + self.size_ms),)

    def describe(self) -> str:
        return f"tumbling {self.size_ms} ms"
