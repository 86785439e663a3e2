"""The page-views event contract (design.md section 8).

An event is a JSON object with ``event_id`` (string, required), ``ts`` (epoch milliseconds
or an ISO-8601 string, required), ``user_id`` (string), ``page`` (non-empty string,
required), ``latency_ms`` (number >= 0) and ``value`` (number). Extra fields are allowed.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from schemas.errors import InvalidEvent
from schemas.timestamps import MAX_EPOCH_MS, parse_event_time, parse_iso8601

_loads = orjson.loads
_new = tuple.__new__  # builds the NamedTuple without its Python-level __new__
_JSONDecodeError = orjson.JSONDecodeError


class PageView(NamedTuple):
    """One valid page view. (A tuple: cheap to build by the million.)"""

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
    """Decode and validate one page-view event; raises :class:`InvalidEvent`.

    The common case (integer ``ts``, fields of exactly the expected JSON types) is checked
    in one expression; anything else takes :func:`_validated`, which applies every rule
    and says which one failed. Both accept exactly the same events
    (tests/unit/test_page_views_schema.py checks it with hypothesis).
    """
    try:
        event = _loads(data)
    except _JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if type(event) is dict:
        event_id = event.get("event_id")
        ts = event.get("ts")
        page = event.get("page")
        user_id = event.get("user_id")
        latency = event.get("latency_ms")
        value = event.get("value")
        if type(ts) is str:
            ts = _iso_or_none(ts)
        if (
            type(event_id) is str
            and type(ts) is int
            and 0 <= ts <= MAX_EPOCH_MS
            and type(page) is str
            and page
            and (user_id is None or type(user_id) is str)
            and (value is None or type(value) is float or type(value) is int)
            and (
                latency is None
                or ((type(latency) is float or type(latency) is int) and latency >= 0)
            )
        ):
            return _new(PageView, (event_id, ts, page, user_id, latency, value))
    return _validated(event)


def _iso_or_none(text: str) -> int | None:
    try:
        return parse_iso8601(text)
    except InvalidEvent:
        return None


def _validated(event: object) -> PageView:
    """Every rule, in order, with a message naming the first one broken."""
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
