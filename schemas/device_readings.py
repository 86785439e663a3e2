"""The device-readings event contract (the device-sessions example pipeline).

An event is a JSON object with ``device_id`` (non-empty string, required), ``ts`` (epoch
milliseconds or an ISO-8601 string, required), ``temperature_c`` (number between -273.15
and 1000), ``battery_pct`` (number between 0 and 100) and ``error`` (a non-empty string
code such as ``"E42"``). Extra fields are allowed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import orjson

from schemas.errors import InvalidEvent
from schemas.timestamps import _excerpt, parse_event_time

_ABSOLUTE_ZERO_C = -273.15
_MAX_TEMPERATURE_C = 1000.0


class DeviceReading(NamedTuple):
    """One valid reading from a device."""

    device_id: str
    ts_ms: int
    temperature_c: float | None = None
    battery_pct: float | None = None
    error: str | None = None


def decode_device_reading(data: bytes) -> DeviceReading:
    """Decode and validate one reading; raises :class:`InvalidEvent` naming the rule broken."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(event).__name__}")
    device_id = event.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise InvalidEvent("device_id is required and must be a non-empty string")
    if "ts" not in event:
        raise InvalidEvent("ts is required")
    ts_ms = parse_event_time(event["ts"])
    temperature = _bounded(event, "temperature_c", _ABSOLUTE_ZERO_C, _MAX_TEMPERATURE_C)
    battery = _bounded(event, "battery_pct", 0.0, 100.0)
    error = event.get("error")
    if error is not None and (not isinstance(error, str) or not error):
        raise InvalidEvent(f"error must be a non-empty string code, got {_describe(error)}")
    return DeviceReading(device_id, ts_ms, temperature, battery, error)


def _bounded(event: dict[str, object], field: str, low: float, high: float) -> float | None:
    raw = event.get(field)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidEvent(f"{field} must be a number, got {_describe(raw)}")
    if not low <= raw <= high:
        raise InvalidEvent(f"{field} must be between {low} and {high}, got {raw}")
    return raw


def _describe(value: object) -> str:
    if isinstance(value, str):
        return _excerpt(value)
    return type(value).__name__
