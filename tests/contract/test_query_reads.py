"""One contract for reading aggregates, on the in-memory store and on DynamoDB.

The story: three shards write page-views rows for twelve pages over ten minutes, the
finalizer finalizes the first minutes, and a reader asks for one key over a range, all
keys of the range page by page, and the top keys of a final window and of an open one.
Both stores answer alike, and DynamoDB answers without a single Scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from processors.direct_load import StoreLoader
from processors.pipeline import AggregateSpec, Sinks
from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.query_pages import iter_pages
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.memory import MemoryFinalStore
from processors.top_query import top_keys
from processors.windowing.aggregators import Count
from tests.conftest import Emulator, make_aws_env

MINUTE = 60_000
T0 = 1_795_000_020_000 - 1_795_000_020_000 % MINUTE
PAGES = [f"/p{i:02d}" for i in range(12)]


def events(shard: int, minute: int) -> list[dict[str, Any]]:
    """Page /pNN gets NN + 1 views a minute from each shard; latency by page and minute."""
    return [
        {
            "event_id": f"{shard}-{minute}-{page}-{n}",
            "ts": T0 + minute * MINUTE + 1_000 * n,
            "page": page,
            "user_id": f"u{n}",
            "latency_ms": 10.0 * index + minute,
            "value": 1.5,
        }
        for index, page in enumerate(PAGES)
        for n in range(index + 1)
    ]


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryFinalStore()
        return
    emulator: Emulator = request.getfixturevalue("emulator")
    aws = make_aws_env(emulator, shards=1)
    dynamo = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    yield dynamo
    dynamo.close()


def forbid_scans(store: Any) -> None:
    """From now on, a Scan of the DynamoDB store fails the test."""

    def no_scans(**kwargs: Any) -> None:
        raise AssertionError("a query read the table with a Scan")

    if isinstance(store, DynamoPartialStore):
        store._client.meta.events.register("before-call.dynamodb.Scan", no_scans)


def load(store: Any) -> StoreLoader:
    loader = StoreLoader(PAGE_VIEWS, store, 3)
    for minute in range(10):
        for shard in range(3):
            loader.send(shard, events(shard, minute))
    loader.finalize()  # its first pass indexes older rows with a Scan, once
    forbid_scans(store)
    return loader


def test_one_key_over_a_range(store: Any) -> None:
    load(store)
    results = query_windows(store, PAGE_VIEWS, "/p03", T0 + 2 * MINUTE, T0 + 5 * MINUTE)
    assert [(r.window.start_ms - T0) // MINUTE for r in results] == [2, 3, 4]
    assert all(r.values["views"] == 3 * 4 and r.values["revenue"] == 18.0 for r in results)
    # The watermark is 9 min 11 s minus 10 s of lateness: minutes 0-8 are final, 9 open.
    assert [r.final for r in results] == [True, True, True]
    later = query_windows(store, PAGE_VIEWS, "/p03", T0 + 7 * MINUTE, None)
    assert [r.final for r in later] == [True, True, False]


def test_all_keys_of_a_range_page_by_page(store: Any) -> None:
    load(store)
    pages = list(iter_pages(store, PAGE_VIEWS, (), T0 + 7 * MINUTE, T0 + 10 * MINUTE, limit=7))
    results = [r for page in pages for r in page.results]
    assert len(pages) == 6  # 36 windows, 7 a page
    assert [(r.window.start_ms, r.key) for r in results] == [
        (T0 + m * MINUTE, page) for m in (7, 8, 9) for page in PAGES
    ]
    assert {r.values["views"] for r in results if r.key == "/p11"} == {36}
    assert [r.final for r in results[::12]] == [True, True, False]


def test_top_keys_of_a_final_and_of_an_open_window(store: Any) -> None:
    load(store)
    final = top_keys(store, PAGE_VIEWS, "views", 3, T0 + 2 * MINUTE + 5)
    assert final is not None and final.final and final.keys == 12
    assert final.top == [("/p11", 36), ("/p10", 33), ("/p09", 30)]
    latest = top_keys(store, PAGE_VIEWS, "latency_max", 2)
    assert latest is not None and not latest.final
    assert latest.window.start_ms == T0 + 9 * MINUTE
    assert latest.top == [("/p11", 119.0), ("/p10", 109.0)]
    # Beyond the hundred keys the finalizer stored, a final window is ranked on read.
    everything = top_keys(store, PAGE_VIEWS, "views", 1000, T0)
    assert everything is not None and len(everything.top) == 12
    assert top_keys(store, PAGE_VIEWS, "views", 3, T0 + 60 * MINUTE) is None


def test_final_rows_are_read_without_their_states_unless_an_aggregate_is_missing(
    store: Any,
) -> None:
    """Queries read a final row's stored values; a row written before the pipeline gained
    an aggregate has no value for it, so it is read whole and its states decoded: the new
    aggregate reads as initial (a sum of nothing: 0)."""
    before = replace(PAGE_VIEWS, aggregates=(AggregateSpec("views", Count()),), sinks=Sinks())
    loader = StoreLoader(before, store, 1)
    loader.send(0, events(0, 0) + events(0, 2))
    loader.finalize()
    assert all(row.state == b"" for row in store.read_finals("page-views", with_states=False))
    forbid_scans(store)
    (old,) = query_windows(store, PAGE_VIEWS, "/p01", T0, T0 + MINUTE)
    assert old.final
    assert old.values["views"] == 2 and old.values["revenue"] == 0
    assert old.values["unique_users"] == 0 and old.values["latency_p99"] is None
