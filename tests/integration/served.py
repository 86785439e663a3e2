"""``shardflow serve`` as a subprocess on a free loopback port, for the tests that talk to
it over real HTTP (the API, its OpenAPI description, the dashboard in a browser)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from processors.direct_load import StoreLoader
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from tests.conftest import AwsEnv
from tests.contract.test_query_reads import T0, events

MINUTE = 60_000


def shifted(shard: int, minute: int, t0: int) -> list[dict[str, Any]]:
    """The contract suite's page views for ``minute``, moved to start at ``t0``."""
    return [{**event, "ts": event["ts"] - T0 + t0} for event in events(shard, minute)]


def load_recent(aws: AwsEnv, minutes: int = 10) -> tuple[int, StoreLoader]:
    """``minutes`` of page views on three shards, the last ending two minutes ago; the
    finalizer has run once. Returns the first minute's start and the loader."""
    now = int(time.time() * 1000)
    t0 = now - now % MINUTE - (minutes + 2) * MINUTE
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    loader = StoreLoader(PAGE_VIEWS, store, 3)
    for minute in range(minutes):
        for shard in range(3):
            loader.send(shard, shifted(shard, minute, t0))
    loader.finalize()
    return t0, loader


@contextmanager
def serving(aws: AwsEnv, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``shardflow serve --port 0 ARGS`` until the block ends; yields its URL."""
    server = subprocess.Popen(
        [*aws.cli(), "serve", "--port", "0", *args],
        env={**aws.env, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert "listening on" in first, first + server.stderr.read() if server.stderr else first
        yield first.split("listening on ")[1].strip()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def get(
    url: str, params: Sequence[tuple[str, str]] = (), token: str | None = None
) -> tuple[int, Any]:
    """Status and decoded JSON body of a GET."""
    query = urllib.parse.urlencode(list(params))
    request = urllib.request.Request(f"{url}?{query}" if query else url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())
