"""device-sessions, the second shipped pipeline: its schema, its sessions over the example
file the README uses, and the stream it reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from processors.pipeline import Sinks
from processors.pipelines import PIPELINES
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.windowing.windows import Window
from schemas.device_readings import DeviceReading, decode_device_reading
from schemas.errors import InvalidEvent
from shardflow.cli import main
from shardflow.replay import replay_file
from shardflow.resources import ResourceNames
from shardflow.settings import Settings
from shardflow.wiring import MixedStreams, default_pipelines, stream_of

T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "device-readings.jsonl"


def test_a_reading_needs_a_device_and_a_time_and_the_rest_is_optional() -> None:
    assert decode_device_reading(b'{"device_id": "d1", "ts": 5}') == DeviceReading("d1", 5)
    full = decode_device_reading(
        b'{"device_id": "d1", "ts": "2026-11-27T10:00:00Z", "temperature_c": -3.5,'
        b' "battery_pct": 100, "error": "E1", "firmware": "2.1"}'
    )
    assert full == DeviceReading("d1", T0, -3.5, 100, "E1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1]", "JSON object"),
        (b"{", "malformed JSON"),
        (b'{"ts": 1}', "device_id"),
        (b'{"device_id": "", "ts": 1}', "device_id"),
        (b'{"device_id": "d"}', "ts is required"),
        (b'{"device_id": "d", "ts": 1, "temperature_c": "hot"}', "temperature_c must be a number"),
        (b'{"device_id": "d", "ts": 1, "temperature_c": -300}', "between"),
        (b'{"device_id": "d", "ts": 1, "battery_pct": 101}', "between"),
        (b'{"device_id": "d", "ts": 1, "battery_pct": true}', "battery_pct must be a number"),
        (b'{"device_id": "d", "ts": 1, "error": 42}', "error must be a non-empty string"),
    ],
)
def test_bad_readings_are_invalid_with_the_rule_they_break(data: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        decode_device_reading(data)


def test_the_example_file_gives_the_sessions_the_readme_shows() -> None:
    with EXAMPLE.open("rb") as stream:
        outcome = replay_file(DEVICE_SESSIONS, stream)
    assert outcome.events == 14
    assert outcome.dead_letters == {"invalid": 2, "late": 1}
    by_window = {(r.key, r.window): r for r in outcome.results}
    assert list(by_window) == [
        ("freezer-7", Window(T0 + 10_000, T0 + 900_000)),
        ("thermostat-1", Window(T0, T0 + 420_000)),
        ("thermostat-1", Window(T0 + 1_200_000, T0 + 1_560_000)),
    ]
    freezer = by_window["freezer-7", Window(T0 + 10_000, T0 + 900_000)].values
    assert freezer["readings"] == 4
    assert freezer["temperature_mean"] == pytest.approx(-17.25)
    assert freezer["temperature_max"] == -16.5
    assert freezer["battery_first"] == 55
    assert freezer["battery_last"] == 54
    second = by_window["thermostat-1", Window(T0 + 1_200_000, T0 + 1_560_000)].values
    # The 10:21 reading has an error code and no battery level: battery_last skips it.
    assert second["readings"] == 2
    assert second["battery_first"] == second["battery_last"] == 80
    assert second["top_errors"] == [["E42", 1]]
    assert freezer["top_errors"] == []
    assert all(r.final for r in outcome.results)


def test_every_shipped_pipeline_reads_a_stream_that_shardflow_up_creates() -> None:
    streams = ResourceNames().streams
    for pipeline in PIPELINES.values():
        assert Settings().stream_for(pipeline.source) in streams, pipeline.name


def test_a_chosen_stream_is_read_by_every_pipeline() -> None:
    assert Settings().stream_for("device-readings") == "device-readings"
    assert Settings().stream_for(None) == "clickstream"
    chosen = Settings().with_overrides(stream="mine")
    assert chosen.stream_for("device-readings") == chosen.stream_for(None) == "mine"
    assert Settings.from_env({"SHARDFLOW_STREAM": "env"}).stream_for("device-readings") == "env"
    # An environment that merely repeats the defaults (a copied LocalStack env file)
    # chooses nothing.
    copied = Settings.from_env({"SHARDFLOW_STREAM": "clickstream"})
    assert copied.stream_for("device-readings") == "device-readings"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), ["page-views"]),
        (Settings().with_overrides(stream="device-readings"), ["device-sessions"]),
        (Settings().with_overrides(stream="my-clicks"), ["page-views"]),
    ],
    ids=["default", "a declared source", "another stream"],
)
def test_run_without_names_runs_the_pipelines_of_the_configured_stream(
    settings: Settings, expected: list[str]
) -> None:
    assert default_pipelines(settings, list(PIPELINES.values())) == expected


def test_one_runner_reads_one_stream() -> None:
    pipelines = [PIPELINES["page-views"], DEVICE_SESSIONS]
    with pytest.raises(MixedStreams, match="device-sessions reads device-readings"):
        stream_of(Settings(), pipelines)
    assert stream_of(Settings().with_overrides(stream="s"), pipelines) == "s"
    assert stream_of(Settings(), [DEVICE_SESSIONS]) == "device-readings"


@pytest.mark.parametrize(
    "change",
    [{"source": ""}, {"sinks": Sinks(results_table=" ")}, {"sinks": Sinks(dead_letter_queue="")}],
)
def test_declared_names_must_be_names(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be a name"):
        replace(DEVICE_SESSIONS, **change)  # type: ignore[arg-type]


def test_run_refuses_pipelines_on_different_streams_before_touching_aws(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SHARDFLOW_STREAM", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("shardflow.cli.make_clients", lambda settings: pytest.fail("AWS used"))
    assert main(["run", "page-views", "device-sessions"]) == 2
    error = capsys.readouterr().err
    assert "page-views reads clickstream" in error
    assert "device-sessions reads device-readings" in error
