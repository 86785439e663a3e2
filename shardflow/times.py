"""Times given on the command line and to the HTTP API: epoch milliseconds, ISO-8601, or
relative to now (``15m`` is fifteen minutes ago, ``now`` is now).

One grammar, :data:`TIME_PATTERN`, decides what is accepted, and the OpenAPI description
publishes the same pattern, so the API accepts exactly the times its description allows.
"""

from __future__ import annotations

import re
import time

from schemas.errors import InvalidEvent
from schemas.timestamps import MAX_EPOCH_MS, parse_iso8601

UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_LENGTH = 64
_EPOCH = r"[0-9]{1,13}"
_AGO = r"[0-9]{1,9}[smhdw]"
_ISO = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
TIME_PATTERN = rf"^ *(now|{_AGO}|{_EPOCH}|{_ISO}) *$"
_GRAMMAR = re.compile(TIME_PATTERN)
HINT = (
    "use ISO-8601 (2026-11-27T10:00:00Z), epoch milliseconds, now, "
    "or a time ago such as 15m, 2h, 7d"
)


class BadTime(ValueError):
    """A time that is none of the accepted forms."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(text: str, now: int | None = None) -> int:
    """Epoch milliseconds from ``1795773600000``, ``2026-11-27T10:00:00Z``, ``now`` or a
    time ago: ``30s``, ``15m``, ``2h``, ``7d``, ``1w`` (``now`` defaults to the clock)."""
    if len(text) > MAX_LENGTH:
        raise BadTime(f"a time is at most {MAX_LENGTH} characters; {HINT}")
    match = _GRAMMAR.fullmatch(text)
    candidate = text.strip()
    if match is None:
        shown = candidate if len(candidate) <= 40 else candidate[:40] + "..."
        if re.fullmatch(r"-?[0-9]+", candidate):
            why = f"time {shown!r} is out of range (epoch milliseconds from 0, at most 13 digits)"
        elif re.fullmatch(r"[0-9]{4}-.*", candidate):
            why = f"time is not an ISO-8601 time with a zone: {shown!r}"
        else:
            why = f"time {shown!r} is not a time"
        raise BadTime(f"{why}; {HINT}")
    if candidate == "now":
        value = now_ms() if now is None else now
    elif candidate[-1] in UNITS_MS and candidate[0].isdigit() and "-" not in candidate:
        ago = int(candidate[:-1]) * UNITS_MS[candidate[-1]]
        value = (now_ms() if now is None else now) - ago
    elif candidate.isdigit():
        value = int(candidate)
    else:
        try:
            value = parse_iso8601(candidate, "time")
        except InvalidEvent as exc:
            raise BadTime(f"{exc}; {HINT}") from None
    if not 0 <= value <= MAX_EPOCH_MS:
        raise BadTime(f"time {candidate!r} is out of range (before 1970 or after 2286); {HINT}")
    return value
