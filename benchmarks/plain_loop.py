"""The yardstick: a minimal hand-written orjson-and-dict loop that validates the page-views
contract and aggregates 60 s tumbling windows (count, sum, min, max) with per-stream
lateness. What a data engineer would write by hand in an afternoon."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

WINDOW_MS = 60_000
LATENESS_MS = 10_000


def _ts(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return int(moment.timestamp() * 1000)
    return None


def _number(raw: Any) -> bool:
    return raw is None or (isinstance(raw, int | float) and not isinstance(raw, bool))


def aggregate(lines: Iterable[bytes]) -> tuple[dict[tuple[str, int], list[Any]], int, int]:
    """(page, window start) -> [views, revenue, latency min, latency max]; invalid; late."""
    windows: dict[tuple[str, int], list[Any]] = {}
    invalid = late = 0
    max_ts = -1
    for line in lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            invalid += 1
            continue
        if not isinstance(event, dict):
            invalid += 1
            continue
        ts = _ts(event.get("ts"))
        page = event.get("page")
        latency = event.get("latency_ms")
        value = event.get("value")
        user = event.get("user_id")
        if (
            ts is None
            or not isinstance(event.get("event_id"), str)
            or not isinstance(page, str)
            or not page
            or not (user is None or isinstance(user, str))
            or not _number(latency)
            or not _number(value)
            or (latency is not None and latency < 0)
        ):
            invalid += 1
            continue
        start = ts - ts % WINDOW_MS
        if start + WINDOW_MS <= max_ts - LATENESS_MS:
            late += 1
            continue
        max_ts = max(max_ts, ts)
        slot = windows.get((page, start))
        if slot is None:
            slot = windows[(page, start)] = [0, 0, None, None]
        slot[0] += 1
        if value is not None:
            slot[1] += value
        if latency is not None:
            if slot[2] is None or latency < slot[2]:
                slot[2] = latency
            if slot[3] is None or latency > slot[3]:
                slot[3] = latency
    return windows, invalid, late
