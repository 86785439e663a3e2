"""The KCL runner's launcher without Java: the options it takes from the command line,
the files it writes, and how it supervises the daemon's process."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import streams.kcl_launcher as launcher
from shardflow import cli
from shardflow.cli import main
from streams.kcl_properties import KclOptions


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[KclOptions]:
    """`run --runner kcl` up to the runner: the options it would run the daemon with."""
    seen: list[KclOptions] = []

    class FakeRunner:
        def __init__(
            self, clients: Any, settings: Any, pipelines: Any, options: KclOptions, **kwargs: Any
        ) -> None:
            seen.append(options)
            self.finalized = launcher.FinalizeReport()

        def run(self, stop: threading.Event) -> int:
            return 0

    monkeypatch.setattr(cli, "make_clients", lambda settings: object())
    monkeypatch.setattr(launcher, "KclRunner", FakeRunner)
    return seen


def test_timing_properties_are_the_launcher_s_and_the_processors_too(
    captured: list[KclOptions],
) -> None:
    argv = ["run", "--runner", "kcl", "--kcl-property", "shutdownGraceMillis=120000"]
    argv += ["--kcl-property", "failoverTimeMillis=30000", "--kcl-property", "maxRecords=500"]
    argv += ["--kcl-property", "shardSyncIntervalMillis=5000"]
    assert main(argv) == 0
    (options,) = captured
    # The stop deadline and the fencing grace follow what the daemon is told.
    assert (options.shutdown_grace_ms, options.failover_ms, options.max_records) == (
        120_000,
        30_000,
        500,
    )
    assert dict(options.overrides) == {"shardSyncIntervalMillis": "5000"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kcl-property", "streamName=other"], "streamName: shardflow sets it (use --stream)"),
        (["--kcl-property", "regionName=eu-west-1"], "use --region"),
        (["--kcl-property", "executableName=/bin/x"], "executableName: shardflow sets it"),
        (["--kcl-property", "failoverTimeMillis=10s"], "positive integer, got '10s'"),
        (["--kcl-property", "shutdownGraceMillis=0"], "positive integer"),
        (["--kcl-application", "my app"], "it names DynamoDB tables"),
        (["--kcl-property", "applicationName=ab"], "it names DynamoDB tables"),
    ],
)
def test_kcl_options_the_daemon_cannot_take_exit_2(
    argv: list[str],
    message: str,
    captured: list[KclOptions],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--runner", "kcl", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not captured  # refused before anything started
