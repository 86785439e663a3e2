"""Event times: integer milliseconds since the epoch, UTC. Parsing and formatting."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.errors import InvalidEvent

# Event times must fit the 13-digit fixed-width form used in storage keys.
MAX_EPOCH_MS = 9_999_999_999_999


def _excerpt(text: str, limit: int = 64) -> str:
    """``text`` quoted, cut to ``limit`` characters: errors must not echo huge inputs."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_event_time(value: object, field: str = "ts") -> int:
    """Epoch milliseconds from an integer or an ISO-8601 string (a time zone is required)."""
    if isinstance(value, bool):
        raise InvalidEvent(
            f"{field} must be epoch milliseconds or an ISO-8601 string, not a boolean"
        )
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise InvalidEvent(f"{field} must be whole epoch milliseconds, got {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        ms = parse_iso8601(value, field)
    else:
        raise InvalidEvent(
            f"{field} must be epoch milliseconds or an ISO-8601 string, got {type(value).__name__}"
        )
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise InvalidEvent(f"{field} is out of range: {ms} ms since the epoch")
    return ms


def parse_iso8601(text: str, field: str = "time") -> int:
    """Epoch milliseconds from an ISO-8601 string; a string without a zone is rejected."""
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise InvalidEvent(f"{field} is not an ISO-8601 time: {_excerpt(text)}") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{field} has no time zone (add Z for UTC): {_excerpt(text)}")
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_iso8601(ms: int) -> str:
    """``2026-11-27T10:00:00Z``, with milliseconds only when they are not zero."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
