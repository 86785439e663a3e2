"""The KCL runner's launcher without Java: the options it takes from the command line,
the files it writes, and how it supervises the daemon's process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import streams.kcl_launcher as launcher
from processors.pipelines import get_pipeline
from shardflow import cli
from shardflow.cli import main
from shardflow.settings import Settings
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
        (
            ["--kcl-property", "streamName=other"],
            "streamName is set by shardflow itself: use --stream",
        ),
        (
            ["--kcl-property", "streamArn=arn:x"],
            "streamArn is set by shardflow itself: use --stream",
        ),
        (["--kcl-property", "regionName=eu-west-1"], "use --region"),
        (["--kcl-property", "executableName=/bin/x"], "executableName is set by shardflow itself"),
        (["--kcl-property", "failoverTimeMillis=10s"], "positive integer, got '10s'"),
        (["--kcl-property", "shutdownGraceMillis=0"], "positive integer"),
        (["--kcl-application", "my app"], "it names DynamoDB tables"),
        (["--kcl-property", "applicationName=ab"], "use --kcl-application"),
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


class _Meta:
    region_name = "us-east-1"


class _Kinesis:
    meta = _Meta()


class _Clients:
    kinesis = _Kinesis()


def _runner(options: KclOptions) -> launcher.KclRunner:
    return launcher.KclRunner(
        _Clients(),  # type: ignore[arg-type]
        Settings(stream="clicks"),
        [get_pipeline("page-views")],
        options,
    )


def test_a_refused_properties_path_leaves_no_files_behind(tmp_path: Path) -> None:
    folder = tmp_path / "my kcl"  # the daemon splits executableName on spaces
    folder.mkdir()
    runner = _runner(KclOptions(properties_path=str(folder / "w.properties")))
    with pytest.raises(ValueError, match="spaces"):
        runner._write_files(tmp_path, "arn@t")
    assert list(folder.iterdir()) == []


def test_a_properties_path_that_is_a_folder_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "kcl"
    folder.mkdir()
    runner = _runner(KclOptions(properties_path=f"{folder}/"))
    with pytest.raises(ValueError, match="is a folder"):
        runner._write_files(tmp_path, "arn@t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kcl"]


def test_the_files_the_daemon_gets(tmp_path: Path) -> None:
    runner = _runner(KclOptions(properties_path=str(tmp_path / "w.properties"), failover_ms=40_000))
    properties, logback = runner._write_files(tmp_path, "arn@t")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["w.logback.xml", "w.processor", "w.processor.json", "w.properties"]
    assert f"executableName = {tmp_path / 'w.processor'}\n" in properties.read_text()
    assert "failoverTimeMillis = 40000\n" in properties.read_text()
    config = json.loads((tmp_path / "w.processor.json").read_text())
    assert config["fence_grace"] == 120.0  # three failover times, at least a minute
    assert logback.exists()


class _FailingSchedule:
    def maybe_run(self) -> None:
        raise RuntimeError("can't start new thread")


def test_the_daemon_is_killed_when_supervising_it_fails() -> None:
    runner = _runner(KclOptions())
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launcher.subprocess, "Popen", popen)
        with pytest.raises(RuntimeError, match="new thread"):
            runner._supervise(command, _FailingSchedule(), threading.Event())  # type: ignore[arg-type]
    (daemon,) = started
    try:
        assert daemon.poll() is not None  # killed and reaped, not left running
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
