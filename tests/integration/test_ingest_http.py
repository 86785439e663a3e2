"""``shardflow ingest`` over real HTTP: uvicorn on a free loopback port, real requests.

The ``backend`` fixture decides where events go: the in-memory fake producer, or (marked
``emulator``) the real :class:`streams.kinesis_producer.KinesisProducer` on the embedded
emulator, read back from the stream. The last tests run ``shardflow ingest`` itself and
stop it with a signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx2
import orjson
import pytest

from processors.pipelines import PIPELINES
from shardflow.ingest import (
    Ingest,
    IngestOptions,
    IngestServer,
    Producer,
    ProducerPool,
    bind,
    targets_for,
    url_of,
)
from shardflow.settings import Settings
from tests.conftest import AwsEnv
from tests.oracle import read_stream
from tests.unit.fake_producer import FakeProducer, ndjson, page_view

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Backend:
    """Where the endpoint's events go, and how to read back what got there."""

    settings: Settings
    producer: Producer
    stored: Callable[[], list[bytes]]
    """The records in the stream (or the fake), as bytes, in no particular order."""


@pytest.fixture(params=["fake", pytest.param("kinesis", marks=pytest.mark.emulator)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        fake = FakeProducer()
        yield Backend(Settings(), fake, lambda: [data for data, _, _ in fake.stored])
        fake.close()
        return
    from streams.kinesis_producer import KinesisProducer

    aws: AwsEnv = request.getfixturevalue("aws")
    stream = aws.settings.stream
    real = KinesisProducer(aws.clients.kinesis, stream)

    def stored() -> list[bytes]:
        shards = read_stream(aws.clients.kinesis, stream)
        return [data for records in shards.values() for _, data in records]

    yield Backend(aws.settings, real, stored)
    real.close(10)


@dataclass
class Running:
    url: str
    ingest: Ingest
    server: IngestServer
    thread: threading.Thread

    def stop(self) -> None:
        """What SIGTERM does to ``shardflow ingest``."""
        self.server.handle_exit(signal.SIGTERM, None)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"


@contextmanager
def running(settings: Settings, producer: Producer) -> Iterator[Running]:
    pool = ProducerPool(lambda stream: producer)
    ingest = Ingest(targets_for(settings, PIPELINES), pool, IngestOptions())
    sock = bind("127.0.0.1", 0)
    server = IngestServer(ingest)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    live = Running(url_of(sock), ingest, server, thread)
    try:
        yield live
    finally:
        if thread.is_alive():
            live.stop()
        sock.close()


def test_events_over_http_reach_the_stream(backend: Backend) -> None:
    array = [page_view(n) for n in range(3)]
    lines = [page_view(n) for n in range(3, 5)]
    with running(backend.settings, backend.producer) as live, httpx2.Client() as http:
        first = http.post(f"{live.url}/v1/events", content=orjson.dumps(array), timeout=30)
        second = http.post(
            f"{live.url}/v1/pipelines/page-views/events",
            content=ndjson(*lines),
            headers={"content-type": "application/x-ndjson"},
            timeout=30,
        )
        health = http.get(f"{live.url}/health")

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["stream"] == backend.settings.stream
    assert [entry["index"] for entry in first.json()["results"]] == [0, 1, 2]
    assert health.status_code == 200 and health.json()["counters"]["events_accepted"] == 5
    assert sorted(backend.stored()) == sorted(orjson.dumps(e) for e in array + lines)
    positions = {
        (r["shard_id"], r["sequence_number"])
        for body in (first, second)
        for r in body.json()["results"]
    }
    assert len(positions) == 5


def test_an_invalid_event_over_http_sends_nothing(backend: Backend) -> None:
    events = [page_view(0), page_view(1, ts="yesterday")]
    with running(backend.settings, backend.producer) as live, httpx2.Client() as http:
        response = http.post(f"{live.url}/v1/events", content=orjson.dumps(events), timeout=30)

    assert response.status_code == 400
    assert [entry["index"] for entry in response.json()["invalid"]] == [1]
    assert backend.stored() == []


def test_shutdown_finishes_requests_in_flight_and_refuses_new_ones() -> None:
    producer = FakeProducer(delay=0.5)
    answers: list[httpx2.Response] = []
    with running(Settings(), producer) as live:

        def send() -> None:
            with httpx2.Client() as http:
                body = orjson.dumps(page_view(1))
                answers.append(http.post(f"{live.url}/v1/events", content=body, timeout=30))

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 10
        while not producer.puts:  # the request is in the producer, waiting for its answer
            assert time.monotonic() < deadline
            time.sleep(0.01)
        live.server.handle_exit(signal.SIGTERM, None)
        assert live.ingest.closing, "a signal refuses new events at once"
        with httpx2.Client() as http:
            try:
                late = http.post(f"{live.url}/v1/events", content=b"{}", timeout=5).status_code
            except httpx2.TransportError:
                late = None  # the listener had already closed
        sender.join(30)
        live.thread.join(30)

    assert late in (None, 503)
    assert [answer.status_code for answer in answers] == [200]
    assert producer.closed and len(producer.stored) == 1


SERVE_FAKE = textwrap.dedent(
    """
    from processors.pipelines import PIPELINES
    from shardflow.ingest import Ingest, IngestOptions, ProducerPool, bind, serve
    from shardflow.ingest import targets_for, url_of
    from shardflow.settings import Settings
    from tests.unit.fake_producer import FakeProducer

    producer = FakeProducer()
    pool = ProducerPool(lambda stream: producer)
    ingest = Ingest(targets_for(Settings(), PIPELINES), pool, IngestOptions())
    sock = bind("127.0.0.1", 0)
    print(url_of(sock), flush=True)
    serve(ingest, sock)
    print(f"closed={producer.closed} stored={len(producer.stored)}", flush=True)
    """
)


def _first_line(stream: IO[bytes] | None, process: subprocess.Popen[bytes]) -> str:
    assert stream is not None
    line = stream.readline().decode()
    assert line, f"no output; exit {process.wait(10)}"
    return line.strip()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_serve_with_exit_0_after_closing_the_producer(sig: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_FAKE],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = _first_line(process.stdout, process)
        response = httpx2.post(f"{url}/v1/events", content=orjson.dumps(page_view(1)), timeout=30)
        assert response.status_code == 200, response.text
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "closed=True stored=1"


@pytest.mark.emulator
def test_the_ingest_command_serves_the_stream_and_stops_on_sigterm(aws: AwsEnv) -> None:
    process = subprocess.Popen(
        [*aws.cli(), "ingest", "--port", "0"],
        env=aws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = _first_line(process.stdout, process)
        assert first.startswith("shardflow ingest listening on http://127.0.0.1:"), first
        url = first.rsplit(" ", 1)[1]
        events = [page_view(n) for n in range(4)]
        response = httpx2.post(f"{url}/v1/events", content=orjson.dumps(events), timeout=60)
        assert response.status_code == 200, response.text
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    shards = read_stream(aws.clients.kinesis, aws.settings.stream)
    stored = sorted(data for records in shards.values() for _, data in records)
    assert stored == sorted(orjson.dumps(event) for event in events)
    results = response.json()["results"]
    assert {(r["shard_id"], r["sequence_number"]) for r in results} == {
        (shard, number) for shard, records in shards.items() for number, _ in records
    }
