"""Review of issue 7: what a user hits with odd data and with ``query --follow``.

The story: a page's revenue sums past 64 bits (three events of 9e18): ``query``, ``top``
and the HTTP API print it exactly instead of failing.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from typing import Any

from starlette.testclient import TestClient

from processors.direct_load import StoreLoader
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryFinalStore
from shardflow.query_command import run_query, run_top
from shardflow.serve import make_app
from shardflow.serve_api import PipelineReader

MINUTE = 60_000
T0 = 1_795_000_020_000 - 1_795_000_020_000 % MINUTE
HUGE = 9_000_000_000_000_000_000


def huge_store() -> MemoryFinalStore:
    store = MemoryFinalStore()
    loader = StoreLoader(PAGE_VIEWS, store, 1)
    loader.send(
        0,
        [{"event_id": f"e{n}", "ts": T0 + n, "page": "/big", "value": HUGE} for n in range(3)],
    )
    loader.send(0, [{"event_id": "later", "ts": T0 + 5 * MINUTE, "page": "/x"}])
    loader.finalize()
    return store


def args(**given: Any) -> argparse.Namespace:
    base = {
        "key": None,
        "since": None,
        "until": None,
        "format": "json",
        "limit": None,
        "cursor": None,
        "follow": False,
        "interval": 2.0,
        "by": "revenue",
        "k": 10,
        "window": None,
    }
    return argparse.Namespace(**{**base, **given})


def test_sums_past_64_bits_print_exactly_as_json() -> None:
    store = huge_store()
    for given in ({}, {"limit": 5}):
        out = io.StringIO()
        assert run_query(args(**given), store, PAGE_VIEWS, threading.Event(), out) == 0
        rows = json.loads(out.getvalue())
        assert [r["revenue"] for r in rows if r["key"] == "/big"] == [3 * HUGE]
    out = io.StringIO()
    assert run_top(args(window=T0), store, PAGE_VIEWS, out) == 0
    assert json.loads(out.getvalue())["top"][0] == {"rank": 1, "key": "/big", "value": 3 * HUGE}


def test_sums_past_64_bits_are_served_exactly() -> None:
    readers = {"page-views": PipelineReader(PAGE_VIEWS, huge_store())}
    with TestClient(make_app(readers, clock=lambda: T0 + 10 * MINUTE)) as client:
        windows = client.get(
            "/api/v1/pipelines/page-views/windows", params={"key": "/big", "since": str(T0)}
        )
        assert windows.status_code == 200, windows.text
        assert windows.json()["windows"][0]["revenue"] == 3 * HUGE
        top = client.get("/api/v1/pipelines/page-views/top", params={"by": "revenue"})
        assert top.status_code == 200, top.text
        one = client.get(f"/api/v1/pipelines/page-views/windows/{T0}")
        assert one.status_code == 200, one.text
