"""``shardflow serve``: the aggregates over HTTP (read-only JSON, an OpenAPI description)
and the live dashboard, on 127.0.0.1 unless told otherwise.

- ``GET /``: the dashboard (shardflow/dashboard/), which reads the JSON API below.
- ``GET /api/v1/pipelines``, ``/api/v1/pipelines/{pipeline}``,
  ``/api/v1/pipelines/{pipeline}/windows``, ``/api/v1/pipelines/{pipeline}/windows/{window}``,
  ``/api/v1/pipelines/{pipeline}/top``: see shardflow/serve_api.py and ``/openapi.json``.
- ``GET /health``: 200 ``{"status": "ok"}``.

With a token (``--token-file`` or ``SHARDFLOW_SERVE_TOKEN``), every ``/api/`` request needs
``Authorization: Bearer <token>`` (401 otherwise); the dashboard page and the OpenAPI
description stay public, since they hold no data. Errors are JSON ``{"error": ...}``:
400 for a bad parameter, 404 for an unknown pipeline or path, 503 when a pipeline's table
cannot be read, 500 (logged) for anything unexpected.
"""

from __future__ import annotations

import hmac
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import orjson
import uvicorn
from botocore.exceptions import BotoCoreError, ClientError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from processors.top_query import numeric_aggregates
from shardflow.ingest import bind, url_of
from shardflow.openapi import openapi
from shardflow.output import dumps
from shardflow.serve_api import Api, ApiError, PipelineReader
from shardflow.times import now_ms
from streams.aws_errors import ResourceMissing, describe

log = logging.getLogger("shardflow.serve")

DEFAULT_PORT = 8081
MAX_REQUEST_HEAD = 1 << 20
"""Bytes of request line and headers uvicorn takes (its default, 16 KiB, is less than
the longest query the API allows: 20 keys of 1 KiB, percent-encoded)."""
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    try:
        text = orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits (an exact sum): the slower writer
        text = dumps(body).encode()
    return Response(text, status_code=status, media_type="application/json", headers=headers)


def _asset(name: str) -> bytes:
    return resources.files("shardflow.dashboard").joinpath(name).read_bytes()


class _BearerToken(BaseHTTPMiddleware):
    """``/api/`` requests must carry the token (the scheme in any case, as RFC 9110 has
    it; the token compared in constant time)."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self._expected = token.encode()

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith("/api/"):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            token = given.strip().encode("latin-1", "replace")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token, self._expected):
                return _json(
                    401,
                    {"error": "this server needs Authorization: Bearer <token>"},
                    {"WWW-Authenticate": 'Bearer realm="shardflow"'},
                )
        return await call_next(request)


def make_app(
    readers: Mapping[str, PipelineReader],
    token: str | None = None,
    clock: Callable[[], int] = now_ms,
) -> Starlette:
    api = Api(readers, clock)
    numeric = [name for r in readers.values() for name in numeric_aggregates(r.pipeline)]
    spec = orjson.dumps(openapi(list(readers), numeric, token is not None))
    page = _asset("index.html")

    def answer(work: Callable[[], Any]) -> Response:
        try:
            return _json(200, work())
        except ApiError as exc:
            return _json(exc.status, {"error": str(exc)})
        except ResourceMissing as exc:
            return _json(503, {"error": str(exc)})
        except (ClientError, BotoCoreError) as exc:
            log.warning("AWS error answering a query: %s", exc)
            return _json(503, {"error": f"AWS: {describe(exc) or exc}"})

    def params(request: Request) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            found.setdefault(name, []).append(value)
        return found

    def pipelines(request: Request) -> Response:
        return answer(api.pipelines)

    def pipeline(request: Request) -> Response:
        return answer(lambda: api.pipeline(request.path_params["pipeline"]))

    def windows(request: Request) -> Response:
        return answer(lambda: api.windows(request.path_params["pipeline"], params(request)))

    def window(request: Request) -> Response:
        name, at = request.path_params["pipeline"], request.path_params["window"]
        return answer(lambda: api.window(name, at, params(request)))

    def top(request: Request) -> Response:
        return answer(lambda: api.top(request.path_params["pipeline"], params(request)))

    def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    def health(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _json(404, {"error": f"no such file: {name[:100]}"})
        return Response(_asset(name), media_type=STATIC[name])

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such path", 405: "method not allowed: the API is read-only (GET)"}
        headers = dict(exc.headers or {})
        return _json(exc.status_code, {"error": message.get(exc.status_code, exc.detail)}, headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error answering %s", request.url.path)
        return _json(500, {"error": f"internal error ({type(exc).__name__}); see the server log"})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/v1/pipelines", pipelines, methods=["GET"]),
        Route("/api/v1/pipelines/{pipeline}", pipeline, methods=["GET"]),
        Route("/api/v1/pipelines/{pipeline}/windows", windows, methods=["GET"]),
        Route("/api/v1/pipelines/{pipeline}/windows/{window}", window, methods=["GET"]),
        Route("/api/v1/pipelines/{pipeline}/top", top, methods=["GET"]),
    ]
    middleware = [Middleware(_BearerToken, token=token)] if token is not None else []
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )


def serve_app(app: Starlette, sock: socket.socket, *, verbose: bool = False) -> None:
    """Serve on ``sock`` until SIGINT or SIGTERM (off the main thread: until
    ``handle_exit``)."""
    config = _config(app, access_log=verbose)
    server = uvicorn.Server(config)
    in_main = threading.current_thread() is threading.main_thread()
    previous: dict[signal.Signals, Any] = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, server.handle_exit)
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _config(app: Starlette, *, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,  # shardflow's logging, as configured by the command line
        access_log=access_log,
        lifespan="off",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
    )


class BackgroundServer:
    """``app`` served on ``sock`` from a thread of its own, for ``shardflow demo``."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        config = _config(app, access_log=False)
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=[sock]), name="dashboard", daemon=True
        )
        self.url = url_of(sock)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def open_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``port``, or on any free port when that one is taken."""
    try:
        return bind(host, port)
    except OSError as exc:
        if port == 0:
            raise
        log.info("port %d is taken (%s): the dashboard takes a free one", port, exc)
        return bind(host, 0)


def run_serve(
    readers: Mapping[str, PipelineReader],
    host: str,
    port: int,
    token: str | None,
    *,
    verbose: bool = False,
) -> int:
    """``shardflow serve``: print the URLs, serve until a signal, exit 0."""
    sock = bind(host, port)
    try:
        url = url_of(sock)
        print(f"shardflow serve listening on {url}", flush=True)
        print(f"  dashboard  {url}/", flush=True)
        print(f"  API        {url}/api/v1/pipelines  (OpenAPI: {url}/openapi.json)", flush=True)
        for reader in readers.values():
            if reader.unavailable:
                print(f"  {reader.pipeline.name}: unavailable: {reader.unavailable}", flush=True)
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("serving on %s without a token: anyone who can reach it can read", host)
        serve_app(make_app(readers, token), sock, verbose=verbose)
    finally:
        sock.close()
    return 0
