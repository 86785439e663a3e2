"""``shardflow ingest``: events over HTTP, into Kinesis through the producer library.

An ASGI app (Starlette) served by uvicorn, on 127.0.0.1 unless told otherwise.

``POST /v1/events`` (the ``--pipeline``, page-views by default) and
``POST /v1/pipelines/{pipeline}/events`` take one JSON event, a JSON array of events, or
JSON lines (:mod:`shardflow.ingest_body`); at most 5 MiB and 10,000 events (413 beyond).
Every event is validated with the pipeline's schema first: if any is invalid, the answer
is 400 listing each bad event's index (and line, for JSON lines) with the reason, and
**nothing is sent**. Valid events go to the pipeline's stream, one record each (compact
JSON; partition key: the event's ``event_id``, or ``--partition-key FIELD``, else an MD5
of the record), and the answer waits until Kinesis has taken them or failed them.

Once sending starts, every answer has the same body, so each event's fate is stated::

    {"pipeline": "page-views", "stream": "clickstream", "events": 3, "accepted": 3,
     "results": [{"index": 0, "shard_id": "shardId-000000000001",
                  "sequence_number": "4963...", "sub_sequence_number": 0}, ...],
     "failed": [], "not_sent": [], "pending": []}

- **200**: Kinesis has every event (``results`` has one entry per event, by index).
- **429** + ``Retry-After``: the producer's buffer filled up while the request was handed
  over. Buffer space cannot be reserved ahead, so the events before that point were sent
  (and are in ``results``, or ``failed``), and the rest were not: ``not_sent`` lists their
  indexes. Resend those, not the whole request, after ``Retry-After`` seconds.
- **503** + ``Retry-After``: shutting down, no producer could be opened, or Kinesis took
  none of the events (``failed`` gives each reason: unreachable, throttled past the
  producer's deadline, missing stream).
- **502**: Kinesis took some events and failed others (``failed``: index and reason).
- **504**: no outcome for the events in ``pending`` within the wait limit; they may still
  arrive, so resending them may store them twice.

Events in ``failed`` and ``not_sent`` are not in Kinesis and can be resent. Other errors
(400, 404, 413, 415) send nothing and have ``{"error": ...}``. ``GET /health`` is 200 with
counters and each producer's statistics, 503 once shutting down. SIGINT or SIGTERM: new
requests get 503, requests in flight finish, the producers send what they hold, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processors.pipeline import Pipeline
from shardflow.ingest_body import BadBody, Invalid, parse_body, prepare
from shardflow.ingest_send import (
    Handover,
    Producer,
    ProducerPool,
    ProducerUnavailable,
    Settled,
    hand_over,
    make_producer,
    outcome_status,
    settle,
)
from shardflow.settings import Settings
from streams.producer_api import ProducerStats

if TYPE_CHECKING:
    from streams.clients import AwsClients

__all__ = [
    "Ingest",
    "IngestOptions",
    "IngestServer",
    "Producer",
    "ProducerPool",
    "ProducerUnavailable",
    "Target",
    "bind",
    "make_producer",
    "run_ingest",
    "serve",
    "targets_for",
    "url_of",
]

log = logging.getLogger("shardflow.ingest")

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Target:
    """A pipeline the endpoint takes events for, and the stream they go to."""

    pipeline: Pipeline[Any]
    stream: str


def targets_for(settings: Settings, pipelines: Mapping[str, Pipeline[Any]]) -> dict[str, Target]:
    return {
        name: Target(pipeline, settings.stream_for(pipeline.source))
        for name, pipeline in pipelines.items()
    }


@dataclass(frozen=True)
class IngestOptions:
    default_pipeline: str = "page-views"
    partition_key: str = "event_id"
    max_body_bytes: int = MAX_BODY_BYTES
    max_events: int = MAX_EVENTS
    wait_timeout: float = 60.0
    """How long a request waits for Kinesis's answer (the producer gives up after 30 s)."""
    unavailable_retry_after: int = 5
    close_timeout: float = 30.0


def _json(status: int, body: Mapping[str, Any], retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadBody(413, f"the body is {declared} bytes; the limit is {limit}", max_bytes=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadBody(413, f"the body is over {limit} bytes", max_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class _Invalid:
    """Events a pipeline rejected: nothing of the request was sent."""

    events: int
    invalid: list[Invalid]


class Ingest:
    """The endpoint: its pipelines, their producers, counters, and whether it is stopping."""

    def __init__(
        self, targets: Mapping[str, Target], pool: ProducerPool, options: IngestOptions
    ) -> None:
        if options.default_pipeline not in targets:
            raise ValueError(f"default pipeline {options.default_pipeline!r} is not served")
        self.targets = dict(targets)
        self.pool = pool
        self.options = options
        self.closing = False
        self.in_flight = 0
        self.counters = dict.fromkeys(
            (
                "requests",
                "events_accepted",
                "events_failed",
                "events_not_sent",
                "events_pending",
                "events_invalid",
                "requests_refused",
            ),
            0,
        )
        routes = [
            Route("/v1/events", self._post_events, methods=["POST"]),
            Route("/v1/pipelines/{pipeline}/events", self._post_events, methods=["POST"]),
            Route("/health", self._health, methods=["GET"]),
        ]
        self.app = Starlette(
            routes=routes,
            exception_handlers={
                HTTPException: self._http_error,
                Exception: self._unexpected_error,
            },
            lifespan=self._lifespan,
        )

    def begin_shutdown(self) -> None:
        """From now on, new events get 503 and /health says so (signal-handler safe)."""
        self.closing = True

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.begin_shutdown()
        await asyncio.to_thread(self.pool.close_all, self.options.close_timeout)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Response(
            orjson.dumps({"error": exc.detail}),
            exc.status_code,
            exc.headers,
            media_type="application/json",
        )

    async def _unexpected_error(self, request: Request, exc: Exception) -> Response:
        """A bug or a surprise (a stream with no open shard, say): still the JSON contract,
        with the error, and a log line with the traceback."""
        log.error("ingest: unexpected %s", type(exc).__name__, exc_info=exc)
        return Response(
            orjson.dumps(
                {
                    "error": f"internal error: {type(exc).__name__}: {exc}",
                    "note": "events of this request may or may not have been sent",
                }
            ),
            500,
            media_type="application/json",
        )

    def _unavailable(self, reason: str) -> Response:
        self.counters["requests_refused"] += 1
        return _json(503, {"error": reason}, self.options.unavailable_retry_after)

    async def _post_events(self, request: Request) -> Response:
        self.counters["requests"] += 1
        name = request.path_params.get("pipeline", self.options.default_pipeline)
        target = self.targets.get(name)
        if target is None:
            self.counters["requests_refused"] += 1
            known = sorted(self.targets)
            message = f"unknown pipeline {name!r}; known pipelines: {', '.join(known)}"
            return _json(404, {"error": message, "known_pipelines": known})
        if self.closing:
            return self._unavailable("shutting down: send the events to another instance")
        self.in_flight += 1
        try:
            body = await _read_body(request, self.options.max_body_bytes)
            content_type = request.headers.get("content-type")
            taken = await asyncio.to_thread(self._take, target, body, content_type)
            if isinstance(taken, _Invalid):
                self.counters["events_invalid"] += len(taken.invalid)
                return _json(400, self._invalid_body(target, taken))
            settled = await settle(taken[1].futures, self.options.wait_timeout)
            return self._outcome(target, taken[0], taken[1], settled)
        except BadBody as exc:
            self.counters["requests_refused"] += 1
            return _json(exc.status, {"error": exc.message, **exc.details})
        finally:
            self.in_flight -= 1

    def _take(
        self, target: Target, body: bytes, content_type: str | None
    ) -> _Invalid | tuple[int, Handover]:
        """Parse, validate and hand over (in a worker thread: all of it is CPU or locks)."""
        parsed = parse_body(body, content_type, self.options.max_events)
        records, invalid = prepare(target.pipeline, parsed, self.options.partition_key)
        if invalid:
            return _Invalid(len(parsed.events), invalid)
        handover = hand_over(
            self.pool, target.stream, records, self.options.unavailable_retry_after
        )
        return len(records), handover

    def _invalid_body(self, target: Target, taken: _Invalid) -> dict[str, Any]:
        return {
            "error": (
                f"{len(taken.invalid)} of {taken.events} events are not valid "
                f"{target.pipeline.name} events; nothing was sent (a request is taken whole "
                "or not at all)"
            ),
            "pipeline": target.pipeline.name,
            "events": taken.events,
            "accepted": 0,
            "invalid": [entry.as_json() for entry in taken.invalid],
        }

    def _outcome(
        self, target: Target, events: int, handover: Handover, settled: Settled
    ) -> Response:
        status, error = outcome_status(handover, settled)
        failed = sorted([*handover.failed, *settled.failed], key=lambda failure: failure.index)
        self.counters["events_accepted"] += len(settled.results)
        self.counters["events_failed"] += len(failed)
        self.counters["events_not_sent"] += len(handover.not_sent)
        self.counters["events_pending"] += len(settled.pending)
        body: dict[str, Any] = {}
        if error is not None:
            body["error"] = error
            log.warning("%s: %s", target.pipeline.name, error)
        body.update(
            pipeline=target.pipeline.name,
            stream=target.stream,
            events=events,
            accepted=len(settled.results),
            results=settled.results,
            failed=[failure.as_json() for failure in failed],
            not_sent=list(handover.not_sent),
            pending=settled.pending,
        )
        retry_after = handover.retry_after if handover.stop_status is not None else None
        if status == 503 and retry_after is None:
            retry_after = self.options.unavailable_retry_after
        return _json(status, body, retry_after)

    async def _health(self, request: Request) -> Response:
        producers = {
            stream: {"buffered": producer.buffered, **_stats(producer.stats)}
            for stream, producer in self.pool.open_streams().items()
        }
        body = {
            "status": "shutting down" if self.closing else "ok",
            "default_pipeline": self.options.default_pipeline,
            "pipelines": {name: target.stream for name, target in self.targets.items()},
            "in_flight": self.in_flight,
            "counters": self.counters,
            "producers": producers,
        }
        if self.closing:
            return _json(503, body, self.options.unavailable_retry_after)
        return _json(200, body)


def _stats(stats: ProducerStats) -> dict[str, Any]:
    """A copy of counters the producer's threads keep updating (``dict(...)`` is atomic)."""
    copied = {field.name: getattr(stats, field.name) for field in dataclasses.fields(stats)}
    return {
        name: dict(value) if isinstance(value, dict) else value for name, value in copied.items()
    }


class IngestServer(uvicorn.Server):
    """uvicorn's server; a signal also makes the endpoint refuse new events at once."""

    def __init__(self, ingest: Ingest, *, verbose: bool = False) -> None:
        config = uvicorn.Config(
            ingest.app,
            log_config=None,  # shardflow's logging, as configured by the command line
            access_log=verbose,
            lifespan="on",
            # Requests in flight wait at most wait_timeout for Kinesis; a client that
            # stalls its request must not hold the shutdown forever.
            timeout_graceful_shutdown=math.ceil(ingest.options.wait_timeout) + 5,
        )
        super().__init__(config)
        self.ingest = ingest

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.ingest.begin_shutdown()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (so the URL printed can be used at once, and port 0 works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(ingest: Ingest, sock: socket.socket, *, verbose: bool = False) -> None:
    """Serve on ``sock`` until SIGINT or SIGTERM; then in-flight requests finish and the
    producers send what they hold. (Off the main thread, stop it through ``handle_exit``.)"""
    server = IngestServer(ingest, verbose=verbose)
    in_main = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if in_main:
        # uvicorn restores the handlers it found and raises the signal again once it has
        # stopped; finding its own handler there, the signal ends nothing else (exit 0).
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, server.handle_exit)
    try:
        server.run(sockets=[sock])
    finally:
        ingest.pool.close_all(ingest.options.close_timeout)  # when uvicorn skipped lifespan
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_ingest(
    settings: Settings,
    clients: AwsClients,
    pipelines: Mapping[str, Pipeline[Any]],
    host: str,
    port: int,
    options: IngestOptions,
    *,
    verbose: bool = False,
) -> int:
    """``shardflow ingest``: print the URL, serve until a signal, exit 0."""
    targets = targets_for(settings, pipelines)
    default = targets[options.default_pipeline]
    pool = ProducerPool(lambda stream: make_producer(clients, replace(settings, stream=stream)))
    sock = bind(host, port)
    try:
        pool.get(default.stream)  # a missing stream or endpoint fails now, not per request
        ingest = Ingest(targets, pool, options)
        url = url_of(sock)
        print(f"shardflow ingest listening on {url}", flush=True)
        print(
            f"  POST {url}/v1/events -> {default.pipeline.name} on stream {default.stream}",
            flush=True,
        )
        serve(ingest, sock, verbose=verbose)
    finally:
        pool.close_all(options.close_timeout)
        sock.close()
    return 0
