"""Times on the command line and in the HTTP API (shardflow/times.py): absolute forms as
before, and times ago relative to a clock that is passed in."""

from __future__ import annotations

import pytest

from shardflow.times import BadTime, parse_time

NOW = 1_795_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("30s", NOW - 30_000),
        ("15m", NOW - 900_000),
        (" 2h ", NOW - 7_200_000),
        ("7d", NOW - 7 * 86_400_000),
        ("1w", NOW - 604_800_000),
        ("1795000000000", 1_795_000_000_000),
        ("2026-11-27T10:00:00Z", 1_795_773_600_000),
    ],
)
def test_accepted_forms(text: str, expected: int) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize(
    "bad", ["15 minutes", "15", "-15m", "1764237600000ms", "m", "", "5y", "NOW", "1H", "2026-11-27"]
)
def test_other_forms_are_refused_naming_every_accepted_one(bad: str) -> None:
    if bad == "15":  # digits alone are epoch milliseconds
        assert parse_time(bad, now=NOW) == 15
        return
    with pytest.raises(BadTime, match=r"ISO-8601 .* epoch milliseconds, now, or a time ago"):
        parse_time(bad, now=NOW)


def test_a_time_is_at_most_64_characters() -> None:
    with pytest.raises(BadTime, match="at most 64 characters"):
        parse_time(" " * 60 + "now  ", now=NOW)


def test_times_before_the_epoch_or_beyond_storage_keys_are_out_of_range() -> None:
    with pytest.raises(BadTime, match="out of range"):
        parse_time("-1", now=NOW)
    with pytest.raises(BadTime, match="out of range"):
        parse_time("99999999999999", now=NOW)
    with pytest.raises(BadTime, match="out of range"):
        parse_time("999999999w", now=NOW)
