"""``shardflow demo`` without AWS: where it sends each service, and what the live view builds.

The demo starts its own emulator whenever the general endpoint is unset: a per-service
override alone (kinesis-local through ``AWS_ENDPOINT_URL_KINESIS``) must not send the table,
queue and topic to the real AWS account.
"""

from __future__ import annotations

import io
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from processors.finalizer import FinalizeReport
from shardflow import demo
from shardflow.emulator import EMULATOR_CREDENTIALS
from shardflow.settings import Settings
from streams.kinesis_producer import ProducerStats, PutResult
from streams.runner import RunStats

EMULATOR_URL = "http://127.0.0.1:4999"
KINESIS_LOCAL = "http://127.0.0.1:4567"


class FakeEmulator:
    instances: list[FakeEmulator] = []

    def __init__(self) -> None:
        self.url = EMULATOR_URL
        self.started = self.stopped = False
        FakeEmulator.instances.append(self)

    def start(self) -> str:
        self.started = True
        return self.url

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def demo_settings(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Runs ``run_demo`` with a fake emulator; returns the settings the demo ran with."""
    FakeEmulator.instances = []
    seen: list[Settings] = []

    def fake_run(settings: Settings, *args: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(demo, "EmulatorProcess", FakeEmulator)
    monkeypatch.setattr(demo, "_run", fake_run)
    return seen


def run_demo(settings: Settings) -> int:
    return demo.run_demo(settings, 1.0, 2, 10.0, threading.Event())


def test_only_a_kinesis_endpoint_still_starts_the_emulator_for_the_rest(
    demo_settings: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env({"AWS_ENDPOINT_URL_KINESIS": KINESIS_LOCAL})
    assert run_demo(settings) == 0

    (emulator,) = FakeEmulator.instances
    assert emulator.started and emulator.stopped
    (used,) = demo_settings
    assert used.endpoint_for("kinesis") == KINESIS_LOCAL
    for service in ("dynamodb", "sqs", "sns"):
        assert used.endpoint_for(service) == EMULATOR_URL
    assert used.static_credentials == EMULATOR_CREDENTIALS
    out = capsys.readouterr().out
    assert f"starting the embedded emulator on {EMULATOR_URL}" in out
    assert f"kinesis keeps its own endpoint {KINESIS_LOCAL}" in out


def test_no_endpoint_at_all_runs_everything_on_the_emulator(
    demo_settings: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(Settings.from_env({})) == 0
    (used,) = demo_settings
    for service in ("kinesis", "dynamodb", "sqs", "sns"):
        assert used.endpoint_for(service) == EMULATOR_URL
    assert FakeEmulator.instances[0].stopped


def test_a_general_endpoint_is_used_as_it_is(
    demo_settings: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env(
        {"AWS_ENDPOINT_URL": "http://localhost:4566", "AWS_ENDPOINT_URL_KINESIS": KINESIS_LOCAL}
    )
    assert run_demo(settings) == 0
    assert FakeEmulator.instances == []
    assert demo_settings == [settings]


# --- the live view -----------------------------------------------------------------------


@dataclass
class FakeStore:
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRunner:
    stats: RunStats = field(default_factory=RunStats)
    finalized: FinalizeReport = field(default_factory=FinalizeReport)

    def run(self, stop: threading.Event) -> RunStats:
        stop.wait()
        return self.stats


class FakeProducer:
    """The producer library's put/flush/close, resolving every put at once."""

    records: list[Any] = []

    def __init__(self, kinesis: Any, stream: str, config: Any = None) -> None:
        self.stats = ProducerStats()

    def __enter__(self) -> FakeProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def put(self, data: bytes, partition_key: str) -> Future[PutResult]:
        FakeProducer.records.append((data, partition_key))
        threading.Event().wait(0.001)
        future: Future[PutResult] = Future()
        future.set_result(PutResult("s", str(len(FakeProducer.records)), 0))
        return future

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        pass


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True  # the view refreshes every second


def test_the_view_reuses_one_store_and_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    stores: list[FakeStore] = []
    queried: list[Any] = []

    def make_store(clients: Any, settings: Settings) -> FakeStore:
        stores.append(FakeStore())
        return stores[-1]

    def query_windows(store: Any, pipeline: Any, since_ms: int) -> list[Any]:
        queried.append(store)
        return []

    class Report:
        def lines(self) -> list[str]:
            return []

    FakeProducer.records = []
    monkeypatch.setattr(demo, "make_clients", lambda settings: SimpleNamespace(kinesis=None))
    monkeypatch.setattr(demo, "ensure_for", lambda *args: Report())
    monkeypatch.setattr(demo, "make_runner", lambda *args: FakeRunner())
    monkeypatch.setattr(demo, "make_store", make_store)
    monkeypatch.setattr(demo, "query_windows", query_windows)
    monkeypatch.setattr(demo, "KinesisProducer", FakeProducer)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)

    stop = threading.Event()
    assert demo._run(Settings(endpoint_url=EMULATOR_URL), 2.2, 2, 100.0, stop) == 0

    assert stop.is_set()
    (store,) = stores
    # At least one refresh and the final view (a loaded machine may fit one refresh
    # fewer into the 2.2 s): enough to see that every view uses the same store.
    assert len(queried) >= 2
    assert all(q is store for q in queried)
    assert store.closed
    assert terminal.getvalue().count("shardflow demo:") == len(queried)
    # The producer got synthetic page views, keyed by their event ids, until the demo stopped.
    first = orjson.loads(FakeProducer.records[0][0])
    assert first["page"] and FakeProducer.records[0][1] == first["event_id"]
