"""The page-views event contract (design.md section 8).

An event is a JSON object with ``event_id`` (string, required), ``ts`` (epoch milliseconds
or an ISO-8601 string, required), ``user_id`` (string), ``page`` (non-empty string,
required), ``latency_ms`` (number >= 0) and ``value`` (number). Extra fields are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas.errors import InvalidEvent
from schemas.timestamps import parse_event_time


@dataclass(frozen=True, slots=True)
class PageView:
    """One valid page view."""

    event_id: str
    ts_ms: int
    page: str
    user_id: str | None = None
    latency_ms: float | None = None
    value: float | None = None


def _optional_number(event: dict[str, object], field: str) -> float | None:
    raw = event.get(field)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidEvent(f"{field} must be a number, got {type(raw).__name__}")
    return raw


def decode_page_view(data: bytes) -> PageView:
    """Decode and validate one page-view event; raises :class:`InvalidEvent`."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(event).__name__}")

    event_id = event.get("event_id")
    if not isinstance(event_id, str):
        raise InvalidEvent("event_id is required and must be a string")
    if "ts" not in event:
        raise InvalidEvent("ts is required")
    ts_ms = parse_event_time(event["ts"])
    page = event.get("page")
    if not isinstance(page, str) or not page:
        raise InvalidEvent("page is required and must be a non-empty string")
    user_id = event.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise InvalidEvent("user_id must be a string")
    latency = _optional_number(event, "latency_ms")
    if latency is not None and latency < 0:
        raise InvalidEvent(f"latency_ms must be >= 0, got {latency}")
    value = _optional_number(event, "value")
    return PageView(event_id, ts_ms, page, user_id, latency, value)
