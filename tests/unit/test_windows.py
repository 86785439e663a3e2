"""Tumbling windows: fixed size, aligned to the epoch, half-open ``[start, end)``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.windowing.windows import TumblingWindows, Window

MINUTE = 60_000
T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z, a whole minute


@pytest.mark.parametrize(
    ("size", "ts", "expected"),
    [
        pytest.param(MINUTE, T0, Window(T0, T0 + MINUTE), id="exactly at a start"),
        pytest.param(MINUTE, T0 + 1, Window(T0, T0 + MINUTE), id="just after a start"),
        pytest.param(MINUTE, T0 + 30_000, Window(T0, T0 + MINUTE), id="middle"),
        pytest.param(MINUTE, T0 + MINUTE - 1, Window(T0, T0 + MINUTE), id="last ms inside"),
        pytest.param(
            MINUTE, T0 + MINUTE, Window(T0 + MINUTE, T0 + 2 * MINUTE), id="end is the next start"
        ),
        pytest.param(MINUTE, T0 - 1, Window(T0 - MINUTE, T0), id="just before a start"),
        pytest.param(MINUTE, 0, Window(0, MINUTE), id="epoch"),
        pytest.param(MINUTE, 59_999, Window(0, MINUTE), id="first minute's last ms"),
        pytest.param(1, T0 + 7, Window(T0 + 7, T0 + 8), id="1 ms windows"),
        pytest.param(1000, 1_234, Window(1000, 2000), id="seconds"),
        pytest.param(7_000, 20_999, Window(14_000, 21_000), id="size not dividing a minute"),
        pytest.param(3_600_000, T0 + 59 * MINUTE, Window(T0, T0 + 3_600_000), id="hours"),
        pytest.param(86_400_000, T0, Window(1_795_737_600_000, 1_795_824_000_000), id="days (UTC)"),
    ],
)
def test_tumbling_assignment(size: int, ts: int, expected: Window) -> None:
    assert TumblingWindows(size).assign(ts) == (expected,)


@pytest.mark.parametrize("size", [0, -1, -MINUTE])
def test_window_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        TumblingWindows(size)


def test_windows_are_values() -> None:
    windows = TumblingWindows(MINUTE)
    assert windows == TumblingWindows(MINUTE)
    assert "60000" in windows.describe()
    window = windows.assign(T0)[0]
    assert (window.start_ms, window.end_ms) == (T0, T0 + MINUTE)


@given(
    size=st.integers(min_value=1, max_value=86_400_000),
    ts=st.integers(min_value=0, max_value=9_999_999_999_999),
)
def test_exactly_one_aligned_window_contains_the_event(size: int, ts: int) -> None:
    """Half-open: ``start <= ts < end``, the window has the configured size, and its
    start is a multiple of the size (aligned to the epoch)."""
    (window,) = TumblingWindows(size).assign(ts)
    assert window.start_ms <= ts < window.end_ms
    assert window.end_ms - window.start_ms == size
    assert window.start_ms % size == 0
