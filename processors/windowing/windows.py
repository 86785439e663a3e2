"""Window assignment: pure functions of event time. Windows are half-open [start, end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class Window(NamedTuple):
    """A half-open interval of event time, ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int


_CACHE_LIMIT = 4_096


class Windows(Protocol):
    """How a pipeline cuts event time into windows. ``size_ms`` is the longest window."""

    @property
    def size_ms(self) -> int: ...

    def assign(self, ts_ms: int) -> tuple[Window, ...]:
        """The windows an event at ``ts_ms`` belongs to, earliest first."""
        ...

    def window_starting(self, start_ms: int) -> Window:
        """The window that starts at ``start_ms`` (to rebuild a row from its key)."""
        ...

    def describe(self) -> str: ...


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

    def window_starting(self, start_ms: int) -> Window:
        return Window(start_ms, start_ms + self.size_ms)

    def describe(self) -> str:
        return f"tumbling {self.size_ms} ms"


@dataclass(frozen=True, slots=True)
class HoppingWindows:
    """Windows of ``size_ms`` that start every ``step_ms`` (aligned to the epoch), so each
    event belongs to ``size_ms / step_ms`` of them; the size must be a whole multiple of
    the step. Windows that would start before the epoch are not produced."""

    size_ms: int
    step_ms: int
    _assigned: dict[int, tuple[Window, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError(
                f"window size and step must be positive, got {self.size_ms} and {self.step_ms} ms"
            )
        if self.size_ms % self.step_ms:
            raise ValueError(
                f"the window size ({self.size_ms} ms) must be a whole multiple of the step "
                f"({self.step_ms} ms)"
            )

    def assign(self, ts_ms: int) -> tuple[Window, ...]:
        last = ts_ms - ts_ms % self.step_ms
        windows = self._assigned.get(last)
        if windows is None:
            if len(self._assigned) >= _CACHE_LIMIT:
                self._assigned.clear()
            first = max(0, last - self.size_ms + self.step_ms)
            windows = tuple(
                Window(start, start + self.size_ms)
                for start in range(first, last + 1, self.step_ms)
            )
            self._assigned[last] = windows
        return windows

    def window_starting(self, start_ms: int) -> Window:
        return Window(start_ms, start_ms + self.size_ms)

    def describe(self) -> str:
        return f"hopping {self.size_ms} ms every {self.step_ms} ms"


@dataclass(frozen=True, slots=True)
class SessionWindows:
    """Sessions of activity per key: events less than ``gap_ms`` apart belong to the same
    session, which spans ``[first event, last event + gap)``. An event that falls between
    two sessions within the gap of both bridges them into one.

    Sessions are stored as *buckets*: tumbling windows ``gap_ms`` long (these are what
    ``assign`` returns and what the engine keeps per key and shard). Two events in one
    bucket are less than a gap apart, so a bucket never holds two sessions; sessions are
    chains of buckets, cut where the next bucket's first event is a gap or more after the
    previous one's last (:mod:`processors.windowing.sessions`). Buckets merge across
    shards like any window, so partial sessions from several shards (and bridging events
    that arrive later) merge into the same sessions in any order, and a stored bucket is
    never moved or deleted when sessions merge.
    """

    gap_ms: int
    _buckets: TumblingWindows = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            raise ValueError(f"session gap must be positive, got {self.gap_ms} ms")
        object.__setattr__(self, "_buckets", TumblingWindows(self.gap_ms))

    @property
    def size_ms(self) -> int:
        """The bucket length (the gap)."""
        return self.gap_ms

    def assign(self, ts_ms: int) -> tuple[Window, ...]:
        """The bucket of an event at ``ts_ms`` (exactly one)."""
        return self._buckets.assign(ts_ms)

    def window_starting(self, start_ms: int) -> Window:
        return Window(start_ms, start_ms + self.gap_ms)

    def closes_at(self, last_event_ms: int) -> int:
        """The watermark at which a session whose last event is at ``last_event_ms`` can
        no longer grow: the end of the last bucket an event within the gap could fall in."""
        last_joinable = last_event_ms + self.gap_ms - 1
        return last_joinable - last_joinable % self.gap_ms + self.gap_ms

    def describe(self) -> str:
        return f"session, gap {self.gap_ms} ms"
