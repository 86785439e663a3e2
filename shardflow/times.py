"""Times given on the command line and to the HTTP API: epoch milliseconds, ISO-8601, or
relative to now (``15m`` is fifteen minutes ago, ``now`` is now)."""

from __future__ import annotations

import re
import time

from schemas.errors import InvalidEvent
from schemas.timestamps import MAX_EPOCH_MS, parse_iso8601

UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_RELATIVE = re.compile(r"([0-9]{1,9})\s*([smhdw])")
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
    candidate = text.strip()
    if re.fullmatch(r"-?[0-9]+", candidate):
        value = int(candidate)
    elif candidate.lower() == "now":
        value = now_ms() if now is None else now
    elif match := _RELATIVE.fullmatch(candidate.lower()):
        ago = int(match.group(1)) * UNITS_MS[match.group(2)]
        value = (now_ms() if now is None else now) - ago
    else:
        try:
            value = parse_iso8601(candidate, "time")
        except InvalidEvent as exc:
            raise BadTime(f"{exc}; {HINT}") from None
    if not 0 <= value <= MAX_EPOCH_MS:
        raise BadTime(f"time {text.strip()!r} is out of range (before 1970 or after 2286); {HINT}")
    return value
