"""device-sessions: what each IoT device did in each session of activity.

A session is a run of readings from one device with less than 5 minutes between
consecutive readings; it spans from its first reading to 5 minutes after its last.
"""

from __future__ import annotations

from operator import attrgetter

from processors.alerts import rule
from processors.pipeline import AggregateSpec, Pipeline, Sinks
from processors.windowing.aggregators import Count, First, Last, Max, Mean
from processors.windowing.sketches import ApproxQuantile
from processors.windowing.top_k import TopK
from processors.windowing.windows import SessionWindows
from schemas.device_readings import DeviceReading, decode_device_reading

SESSION_GAP_MS = 5 * 60_000

_temperature = attrgetter("temperature_c")


def _timed_battery(reading: DeviceReading) -> tuple[int, float] | None:
    """(event time, battery level) for First and Last; None when the reading has none."""
    if reading.battery_pct is None:
        return None
    return (reading.ts_ms, reading.battery_pct)


DEVICE_SESSIONS: Pipeline[DeviceReading] = Pipeline(
    name="device-sessions",
    description=(
        "Readings, temperature, battery and errors per device session (5 min gap, 60 s lateness)"
    ),
    decode=decode_device_reading,
    key=attrgetter("device_id"),
    event_time=attrgetter("ts_ms"),
    windows=SessionWindows(gap_ms=SESSION_GAP_MS),
    allowed_lateness_ms=60_000,
    source="device-readings",
    aggregates=(
        AggregateSpec("readings", Count()),
        AggregateSpec("temperature_mean", Mean(), _temperature),
        AggregateSpec("temperature_max", Max(), _temperature),
        AggregateSpec("temperature_p95", ApproxQuantile(0.95), _temperature),
        AggregateSpec("battery_first", First(), _timed_battery),
        AggregateSpec("battery_last", Last(), _timed_battery),
        AggregateSpec("top_errors", TopK(k=3), attrgetter("error")),
    ),
    # One alert per device session that ran hot, or ended with the battery nearly flat.
    sinks=Sinks(
        alerts=(
            rule("temperature_max >= 60", severity="critical"),
            rule("battery_last < 10", severity="warning"),
        )
    ),
)
