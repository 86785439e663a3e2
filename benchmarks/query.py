"""``make bench`` (part 5): how long queries take, on the embedded emulator (moto in a
process of its own), through the library and through ``shardflow serve`` over HTTP.

Two data sets, as issue 7 asks:

- one key (``/home``) with 24 hours of one-minute page-views windows from two shards
  (1,440 windows; all final but the last, as they are a day later);
- one minute with ``--keys`` keys (10,000 by default) from one shard, finalized (its top
  keys stored), and the minute after it, still open, with as many keys.

Measured, each ``--repeat`` times (min / median / max, milliseconds), on the same data in
the in-memory store (shardflow's own share of the time) and in DynamoDB on the emulator:

- one key over 24 h: ``query_windows``, and ``GET /api/v1/pipelines/page-views/windows``;
- the top 10 keys of the final window (one stored item) and of the open window (ranked on
  read from every key's row, through the window index), in the library and over HTTP;
- the bytes DynamoDB sends for one key's final rows with and without their states.

Absolute figures from the emulator are a rough guide: moto answers every Query by looking
at every item of the table (DynamoDB reads only the key's items), so its times grow with
the table; and it shares this machine. What carries over to DynamoDB is what each query
asks for, counted for each: calls by operation, items and bytes returned. The in-memory
times are shardflow's own work.

    python -m benchmarks.query [--keys N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from processors.direct_load import StoreLoader
from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.memory import MemoryFinalStore
from processors.top_query import top_keys
from shardflow.emulator import EMULATOR_CREDENTIALS, EMULATOR_ENV, EmulatorProcess
from shardflow.resources import ResourceNames, ResourceReport, ensure_table
from shardflow.settings import Settings
from streams.clients import make_clients

MINUTE = 60_000
DAY_START = 1_795_737_600_000  # 2026-11-27T00:00:00Z
WIDE_START = DAY_START + 2 * 86_400_000


def view(ts: int, page: str, n: int) -> dict[str, Any]:
    return {
        "event_id": f"{page}-{ts}-{n}",
        "ts": ts,
        "page": page,
        "user_id": f"u{n % 50}",
        "latency_ms": 10.0 + n % 90,
        "value": 1.25,
    }


def load_day(loader: StoreLoader) -> None:
    """/home: 1,440 one-minute windows, three views a minute from each of two shards."""
    for shard in range(2):
        events = [
            view(DAY_START + minute * MINUTE + 1000 * n, "/home", n)
            for minute in range(1440)
            for n in range(3)
        ]
        for offset in range(0, len(events), 1500):
            loader.send(shard, events[offset : offset + 1500])
    loader.finalize()


def load_wide(loader: StoreLoader, keys: int, start: int) -> None:
    """``keys`` keys in the minute at ``start`` (finalized) and in the next (open), on
    shard 0; shard 1 moves on as far, so as not to hold the first minute open."""
    for minute in (0, 1):
        # Key n gets 1 + n % 5 views, so that there is something to rank.
        events = [
            view(start + minute * MINUTE + (n + copy) % 40_000, f"/item/{n:05d}", n)
            for n in range(keys)
            for copy in range(1 + n % 5)
        ]
        for offset in range(0, len(events), 2000):
            loader.send(0, events[offset : offset + 2000])
    # Late in the second minute on both shards: the watermark passes the first minute's
    # end, not the second's.
    for shard in range(2):
        loader.send(shard, [view(start + MINUTE + 55_000, "/item/00000", keys + shard)])
    loader.finalize()


def timed(work: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    work()  # warm: connections, caches
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def line(name: str, times: list[float], note: str) -> str:
    return (
        f"  {name:<44} {min(times):8.1f} {statistics.median(times):8.1f} {max(times):8.1f}   {note}"
    )


@contextmanager
def served(url: str, table: str) -> Iterator[str]:
    """``shardflow serve`` on a free port, against the emulator at ``url``."""
    env = {**EMULATOR_ENV, "AWS_ENDPOINT_URL": url, "SHARDFLOW_TABLE": table}
    server = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "serve", "page-views", "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        if "listening on" not in first:
            raise RuntimeError(f"shardflow serve did not start: {first!r}")
        yield first.split("listening on ")[1].strip()
    finally:
        server.terminate()
        server.wait(timeout=20)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


class Requests:
    """DynamoDB calls by operation, items returned and bytes received, while counting."""

    def __init__(self, client: Any | None) -> None:
        self.calls: dict[str, int] = {}
        self.items = 0
        self.bytes = 0
        if client is not None:
            client.meta.events.register("after-call.dynamodb", self._count)

    def _count(self, http_response: Any, parsed: Any, model: Any, **kwargs: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        self.bytes += len(http_response.content)
        self.items += len(parsed.get("Items", ())) + (1 if "Item" in parsed else 0)
        for found in parsed.get("Responses", {}).values():
            self.items += len(found)

    def reset(self) -> None:
        self.calls, self.items, self.bytes = {}, 0, 0

    def summary(self, runs: int) -> str:
        if not self.calls:
            return ""
        calls = ", ".join(f"{n // runs} {name}" for name, n in sorted(self.calls.items()))
        kib = self.bytes / runs / 1024
        return f"; per query: {calls}, {self.items // runs:,} items, {kib:,.0f} KiB"


def library_queries(store: Any, where: str, keys: int, repeat: int, client: Any = None) -> None:
    """The three queries through the library, on ``store`` (DynamoDB calls counted when
    ``client`` is its client)."""
    since, until = DAY_START, DAY_START + 1440 * MINUTE
    wide_start = WIDE_START
    requests = Requests(client)
    day, results = timed(lambda: query_windows(store, PAGE_VIEWS, "/home", since, until), repeat)
    finals = sum(r.final for r in results)
    note = f"{len(results)} windows, {finals} final{requests.summary(repeat + 1)}"
    print(line(f"one key, 24 h ({where})", day, note))
    if not keys:
        return
    requests.reset()
    final_top, ranked = timed(lambda: top_keys(store, PAGE_VIEWS, "views", 10, wide_start), repeat)
    assert ranked is not None and ranked.final and ranked.keys == keys
    note = f"stored item{requests.summary(repeat + 1)}"
    print(line(f"top 10 of {keys:,} keys, final window ({where})", final_top, note))
    requests.reset()
    open_top, ranked = timed(
        lambda: top_keys(store, PAGE_VIEWS, "views", 10, wide_start + MINUTE), repeat
    )
    assert ranked is not None and not ranked.final and ranked.keys == keys
    note = f"ranked on read{requests.summary(repeat + 1)}"
    print(line(f"top 10 of {keys:,} keys, open window ({where})", open_top, note))
    if client is not None:
        client.meta.events.unregister("after-call.dynamodb", requests._count)


def state_bytes(clients: Any, store: DynamoPartialStore, repeat: int) -> None:
    """What leaving the states out saves: the same Query of one key's final rows."""
    since, until = DAY_START, DAY_START + 1440 * MINUTE
    received = [0]

    def count(http_response: Any, **kwargs: Any) -> None:
        received[0] += len(http_response.content)

    clients.dynamodb.meta.events.register("after-call.dynamodb.Query", count)
    for with_states in (True, False):
        received[0] = 0
        read, rows = timed(
            lambda states=with_states: store.read_finals(  # type: ignore[misc]
                "page-views", "/home", since, until, states
            ),
            repeat,
        )
        kib = received[0] / (repeat + 1) / 1024
        what = "with states" if with_states else "values only, as queries read"
        print(line(f"  its final rows, {what}", read, f"{len(rows)} rows, {kib:,.0f} KiB"))
    clients.dynamodb.meta.events.unregister("after-call.dynamodb.Query", count)


def http_queries(url: str, keys: int, repeat: int) -> None:
    api = f"{url}/api/v1/pipelines/page-views"
    since, until = DAY_START, DAY_START + 1440 * MINUTE
    day, _ = timed(
        lambda: fetch(f"{api}/windows?key=/home&since={since}&until={until}&limit=10000"), repeat
    )
    print(line("one key, 24 h (HTTP)", day, "GET .../windows?key=/home"))
    if not keys:
        return
    top, _ = timed(lambda: fetch(f"{api}/top?by=views&window={WIDE_START}"), repeat)
    print(line(f"top 10 of {keys:,} keys, final window (HTTP)", top, "GET .../top"))
    wide_open, _ = timed(lambda: fetch(f"{api}/top?by=views&window={WIDE_START + MINUTE}"), repeat)
    print(line(f"top 10 of {keys:,} keys, open window (HTTP)", wide_open, "GET .../top"))


def load(store: Any, keys: int) -> float:
    """Both data sets into ``store`` through one loader (one pair of shards)."""
    started = time.perf_counter()
    loader = StoreLoader(PAGE_VIEWS, store, 2)
    load_day(loader)
    if keys:
        load_wide(loader, keys, WIDE_START)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keys", type=int, default=10_000, help="keys in the wide window (0: one key only)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="timed runs of each query")
    args = parser.parse_args(argv)

    memory = MemoryFinalStore()
    loaded = load(memory, args.keys)
    print(f"in memory: loaded in {loaded:.0f}s")
    emulator = EmulatorProcess()
    emulator.start()
    try:
        settings = replace(
            Settings.from_env(),
            endpoint_url=emulator.url,
            static_credentials=EMULATOR_CREDENTIALS,
            region="us-east-1",
        )
        clients = make_clients(settings)
        names = ResourceNames("unused", "bench-queries", "unused", "unused", ())
        ensure_table(clients.dynamodb, names, ResourceReport())
        store = DynamoPartialStore(clients.dynamodb, names.table)
        loaded = load(store, args.keys)
        print(
            f"emulator: loaded 1,440 windows of one key and 2 x {args.keys:,} keys in "
            f"{loaded:.0f}s; {args.repeat} timed runs of each query, ms:"
        )
        print(f"  {'query':<52} {'min':>8} {'median':>8} {'max':>8}")
        library_queries(memory, "library, in memory", args.keys, args.repeat)
        library_queries(store, "library, emulator", args.keys, args.repeat, clients.dynamodb)
        state_bytes(clients, store, args.repeat)
        with served(emulator.url, names.table) as url:
            http_queries(url, args.keys, args.repeat)
        store.close()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
