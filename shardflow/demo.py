"""``shardflow demo``: emulator, resources, a steady producer, the runner and a live table."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.windowing.results import WindowResult
from shardflow.emulator import EMULATOR_CREDENTIALS, EmulatorProcess
from shardflow.input import synthetic_records
from shardflow.output import reason_counts, render_table
from shardflow.produce import ProduceReport, produce
from shardflow.settings import Settings
from shardflow.wiring import ensure_for, make_runner, make_store
from streams.clients import make_clients
from streams.kinesis_producer import KinesisProducer
from streams.runner import EmbeddedRunner, RunnerOptions

if TYPE_CHECKING:
    from shardflow.serve import BackgroundServer

log = logging.getLogger("shardflow.demo")

VIEW_WINDOW_MS = 180_000
DASHBOARD_PORT = 8081


def _url(server: BackgroundServer | None) -> str | None:
    return None if server is None else server.url


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def needs_embedded_emulator(settings: Settings) -> bool:
    """True unless a general endpoint (``AWS_ENDPOINT_URL``, ``--endpoint-url``) is set.

    A per-service override alone (``AWS_ENDPOINT_URL_KINESIS`` for kinesis-local) must not
    send the other services to the real AWS account.
    """
    return not settings.endpoint_url


def on_embedded_emulator(settings: Settings, url: str) -> Settings:
    """Every service without an endpoint of its own goes to the emulator at ``url``."""
    return replace(settings, endpoint_url=url, static_credentials=EMULATOR_CREDENTIALS)


def _endpoints(settings: Settings) -> str:
    own = "".join(f", {name} {url}" for name, url in sorted(settings.service_endpoints.items()))
    return f"endpoint {settings.endpoint_url}{own}"


def _latest_per_key(results: list[WindowResult]) -> list[WindowResult]:
    """The two most recent windows of each key, newest first within a key."""
    by_key: dict[str, list[WindowResult]] = {}
    for result in results:
        by_key.setdefault(result.key, []).append(result)
    latest: list[WindowResult] = []
    for key in sorted(by_key):
        latest.extend(sorted(by_key[key], key=lambda r: -r.window.start_ms)[:2])
    return latest


class _Thread(threading.Thread):
    """A thread that keeps the exception it died of, and stops the demo when it does."""

    def __init__(self, name: str, target: Callable[[], Any], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._work = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self.error = exc
            log.error("%s failed: %s", self.name, exc)
            self._stop_event.set()


def _view(
    store: DynamoPartialStore,
    settings: Settings,
    runner: EmbeddedRunner,
    produced: ProduceReport,
    started: float,
    dashboard: str | None = None,
) -> str:
    results = query_windows(store, PAGE_VIEWS, since_ms=_now_ms() - VIEW_WINDOW_MS)
    stats = runner.stats
    header = (
        f"shardflow demo: {time.monotonic() - started:5.0f}s  produced {produced.sent}  "
        f"processed {stats.records}  dead letters {reason_counts(stats.dead_letters)}  "
        f"final rows {runner.finalized.final_rows}  alerts {runner.finalized.alerts_sent}  "
        f"shards {stats.shards}  {_endpoints(settings)}"
    )
    table = render_table(_latest_per_key(results), PAGE_VIEWS.aggregate_names)
    where = f"dashboard: {dashboard}/   " if dashboard else ""
    return f"{header}\n\n{table}\n\n{where}Ctrl-C stops every part cleanly."


def _drain(runner: EmbeddedRunner, produced: ProduceReport, thread: threading.Thread) -> None:
    """Let the runner catch up with what was produced (up to 10 s) before stopping it."""
    deadline = time.monotonic() + 10
    while thread.is_alive() and runner.stats.records < produced.sent:
        if time.monotonic() > deadline:
            log.warning(
                "stopping with %d records not yet read", produced.sent - runner.stats.records
            )
            return
        time.sleep(0.1)


def run_demo(
    settings: Settings,
    duration: float | None,
    shards: int,
    rate: float,
    stop: threading.Event,
    dashboard_port: int | None = DASHBOARD_PORT,
) -> int:
    emulator: EmulatorProcess | None = None
    if needs_embedded_emulator(settings):
        emulator = EmulatorProcess()
        print(f"starting the embedded emulator on {emulator.url} ...", flush=True)
        for name, url in sorted(settings.service_endpoints.items()):
            print(f"  {name} keeps its own endpoint {url}", flush=True)
        emulator.start()
        settings = on_embedded_emulator(settings, emulator.url)
    try:
        return _run(settings, duration, shards, rate, stop, dashboard_port)
    finally:
        if emulator is not None:
            emulator.stop()


def _start_dashboard(store: DynamoPartialStore, port: int) -> BackgroundServer:
    """``shardflow serve`` for page-views in this process, on 127.0.0.1."""
    from shardflow.serve import BackgroundServer, make_app, open_socket  # noqa: PLC0415
    from shardflow.serve_api import PipelineReader  # noqa: PLC0415

    app = make_app({PAGE_VIEWS.name: PipelineReader(PAGE_VIEWS, store)})
    server = BackgroundServer(app, open_socket("127.0.0.1", port))
    server.start()
    return server


def _run(
    settings: Settings,
    duration: float | None,
    shards: int,
    rate: float,
    stop: threading.Event,
    dashboard_port: int | None = None,
) -> int:
    clients = make_clients(settings)
    report = ensure_for(clients, settings, shards, [PAGE_VIEWS])
    for line in report.lines():
        print(line, flush=True)
    runner = make_runner(clients, settings, [PAGE_VIEWS], RunnerOptions(flush_interval=1.0))
    produced = ProduceReport()

    runner_stop = threading.Event()

    def send() -> None:
        def update(report: ProduceReport) -> None:
            produced.sent = report.sent

        events = synthetic_records(
            None,
            int(time.time()),
            "event_id",
            stop=stop,
            late_fraction=0.01,
            invalid_fraction=0.01,
        )
        with KinesisProducer(clients.kinesis, settings.stream) as producer:
            update(produce(producer, events, rate, update))

    producer_thread = _Thread("producer", send, stop)
    runner_thread = _Thread("runner", lambda: runner.run(runner_stop), stop)
    view_store = make_store(clients, settings)  # one store (and thread pool) for every view
    dashboard = None
    try:
        if dashboard_port is not None:
            dashboard = _start_dashboard(view_store, dashboard_port)
            print(f"dashboard: open {dashboard.url}/ in a browser", flush=True)
        producer_thread.start()
        runner_thread.start()

        started = time.monotonic()
        interactive = sys.stdout.isatty()
        refresh = 1.0 if interactive else 5.0
        while not stop.wait(refresh):
            if duration is not None and time.monotonic() - started >= duration:
                stop.set()
                break
            view = _view(view_store, settings, runner, produced, started, _url(dashboard))
            if interactive:
                print("\x1b[H\x1b[2J" + view, flush=True)
            else:
                print(view + "\n", flush=True)
        producer_thread.join(timeout=30)
        _drain(runner, produced, runner_thread)
        runner_stop.set()
        runner_thread.join(timeout=60)
        print(_view(view_store, settings, runner, produced, started), flush=True)
    finally:
        if dashboard is not None:
            dashboard.stop()
        view_store.close()
    failed = [t for t in (producer_thread, runner_thread) if t.error is not None]
    for thread in failed:
        print(f"shardflow demo: the {thread.name} failed: {thread.error}", file=sys.stderr)
    if runner_thread.is_alive():
        print("shardflow demo: the runner did not stop in time", file=sys.stderr)
        return 1
    return 1 if failed else 0
