"""Event time is integer milliseconds since the epoch, UTC (design.md section 2).

Events may carry it as an integer, a whole float, or an ISO-8601 string that names its
time zone; anything else is invalid.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import InvalidEvent
from schemas.timestamps import MAX_EPOCH_MS, format_iso8601, parse_event_time, parse_iso8601

T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0, T0),
        (0, 0),
        (MAX_EPOCH_MS, MAX_EPOCH_MS),
        (float(T0), T0),  # a whole float is fine: JSON writers often emit 1.7e12
        (1.7e12, 1_700_000_000_000),
        ("2026-11-27T10:00:00Z", T0),
        ("2026-11-27T10:00:00z", T0),
        ("2026-11-27T10:00:00+00:00", T0),
        ("2026-11-27T11:00:00+01:00", T0),
        ("2026-11-27T04:30:00-05:30", T0),
        ("2026-11-27T10:00:00.250Z", T0 + 250),
        ("2026-11-27T10:00:00.2509Z", T0 + 250),  # sub-millisecond digits are truncated
        ("2026-11-27 10:00:00Z", T0),
        ("  2026-11-27T10:00:00Z  ", T0),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_valid_event_times(value: object, expected: int) -> None:
    assert parse_event_time(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "boolean"),
        (False, "boolean"),
        (None, "NoneType"),
        ([T0], "list"),
        ({"ms": T0}, "dict"),
        (1.5, "whole"),
        (T0 + 0.5, "whole"),
        (float("nan"), "whole"),
        (float("inf"), "whole"),
        (-1, "out of range"),
        (MAX_EPOCH_MS + 1, "out of range"),
        (10**30, "out of range"),
        ("2026-11-27T10:00:00", "no time zone"),
        ("2026-11-27", "no time zone"),
        ("1969-12-31T23:59:59Z", "out of range"),
        ("yesterday", "not an ISO-8601"),
        ("", "not an ISO-8601"),
        ("Z", "not an ISO-8601"),
        ("2026-13-01T00:00:00Z", "not an ISO-8601"),
        ("1795773600000", "not an ISO-8601"),  # digits in a string are not epoch ms
    ],
)
def test_invalid_event_times(value: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        parse_event_time(value)


def test_error_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match="since"):
        parse_event_time(True, field="since")


def test_invalid_event_is_a_value_error() -> None:
    """Callers that only know ValueError still catch schema errors."""
    assert issubclass(InvalidEvent, ValueError)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (T0, "2026-11-27T10:00:00Z"),
        (T0 + 5, "2026-11-27T10:00:00.005Z"),
        (T0 + 999, "2026-11-27T10:00:00.999Z"),
        (0, "1970-01-01T00:00:00Z"),
        (MAX_EPOCH_MS, "2286-11-20T17:46:39.999Z"),
    ],
)
def test_format_iso8601(ms: int, text: str) -> None:
    """Milliseconds appear only when they are not zero."""
    assert format_iso8601(ms) == text


@given(st.integers(min_value=0, max_value=MAX_EPOCH_MS))
def test_format_then_parse_round_trips(ms: int) -> None:
    assert parse_iso8601(format_iso8601(ms)) == ms
    assert parse_event_time(format_iso8601(ms)) == ms
