"""Review of issue 7: what a user hits with odd data and with ``query --follow``.

The story: a page's revenue sums past 64 bits (three events of 9e18): ``query``, ``top``
and the HTTP API print it exactly instead of failing. ``query --follow --until`` waits for
the window that overlaps ``--until``, and a follower of a session pipeline sees every
session become final, even one whose end the final frontier passed before it was final.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from processors.direct_load import StoreLoader
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS
from processors.query_pages import QueryError
from processors.sinks.memory import MemoryFinalStore
from shardflow.query_command import follow, run_query, run_top
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


class Steps:
    """A stop event for :func:`follow` whose waits run the next step of a story (and
    stop the follower once the story is told, or after too many reads)."""

    def __init__(self, steps: list[Callable[[], None]], most: int = 20) -> None:
        self.steps = list(steps)
        self.waits = 0
        self.most = most

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        if self.steps:
            self.steps.pop(0)()
            return False
        return self.waits >= self.most


def printed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_follow_until_waits_for_the_window_that_overlaps_until() -> None:
    store = MemoryFinalStore()
    loader = StoreLoader(PAGE_VIEWS, store, 1)
    loader.send(0, [{"event_id": "a", "ts": T0 + 5_000, "page": "/home"}])
    # The watermark passes T0 + 30 s (until) while the window [T0, T0 + 60 s) is open.
    loader.send(0, [{"event_id": "b", "ts": T0 + 45_000, "page": "/home"}])
    steps = Steps(
        [
            lambda: loader.send(0, [{"event_id": "c", "ts": T0 + 50_000, "page": "/home"}]),
            lambda: loader.send(0, [{"event_id": "d", "ts": T0 + 75_000, "page": "/other"}]),
        ]
    )
    out = io.StringIO()
    code = follow(
        store,
        PAGE_VIEWS,
        ["/home"],
        T0,
        T0 + 30_000,
        "json",
        0.0,
        steps,
        out,  # type: ignore[arg-type]
    )
    assert code == 0
    lines = printed(out)
    assert lines[-1]["final"] is True and lines[-1]["views"] == 3, lines
    assert steps.waits == 2  # it stopped as soon as the window was final, not before


def test_follow_shows_each_session_final() -> None:
    gap = DEVICE_SESSIONS.windows.size_ms  # 5 minutes; 60 s of lateness
    s0 = T0 - T0 % gap
    store = MemoryFinalStore()
    loader = StoreLoader(DEVICE_SESSIONS, store, 1)

    def reading(device: str, ts: int) -> dict[str, Any]:
        return {"device_id": device, "ts": ts, "temperature_c": 20.0}

    # d1's session is [s0, s0 + 6 min); it is final once the frontier reaches the end of
    # the bucket its last reading plus the gap falls in: s0 + 10 min.
    loader.send(0, [reading("d1", s0), reading("d1", s0 + MINUTE)])
    assert DEVICE_SESSIONS.windows.closes_at(s0 + MINUTE) == s0 + 10 * MINUTE
    # The frontier (s0 + 7 min) passes the session's end but not s0 + 10 min.
    loader.send(0, [reading("d2", s0 + 8 * MINUTE)])
    steps = Steps([lambda: loader.send(0, [reading("d2", s0 + 12 * MINUTE)])], most=3)
    out = io.StringIO()
    code = follow(
        store,
        DEVICE_SESSIONS,
        [],
        s0,
        None,
        "json",
        0.0,
        steps,
        out,  # type: ignore[arg-type]
    )
    assert code == 0
    d1 = [line for line in printed(out) if line["key"] == "d1"]
    assert [line["final"] for line in d1] == [False, True]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"cursor": "garbage", "format": "csv"}, "is not one a query returned"),
        ({"since": T0 + MINUTE, "until": T0, "format": "csv"}, "must not be before --since"),
    ],
)
def test_mistakes_are_refused_before_anything_is_printed(
    given: dict[str, Any], message: str
) -> None:
    out = io.StringIO()
    with pytest.raises(QueryError, match=message):
        run_query(args(**given), huge_store(), PAGE_VIEWS, threading.Event(), out)
    assert out.getvalue() == ""


@pytest.mark.parametrize("limit", ["1_0", " 5", "+5", "\u0665", "5 "])
def test_api_numbers_are_digits_only(limit: str) -> None:
    readers = {"page-views": PipelineReader(PAGE_VIEWS, huge_store())}
    with TestClient(make_app(readers, clock=lambda: T0 + 10 * MINUTE)) as client:
        answer = client.get("/api/v1/pipelines/page-views/windows", params={"limit": limit})
        assert answer.status_code == 400, answer.text
        assert "whole number" in answer.json()["error"]


def test_follow_until_in_the_past_without_since_reads_the_15_minutes_before_it() -> None:
    store = MemoryFinalStore()
    loader = StoreLoader(PAGE_VIEWS, store, 1)
    loader.send(0, [{"event_id": "a", "ts": T0 + 5_000, "page": "/home"}])
    loader.send(0, [{"event_id": "z", "ts": T0 + 30 * MINUTE, "page": "/later"}])
    out = io.StringIO()
    clock = lambda: T0 + 60 * MINUTE  # noqa: E731 (an hour after the data)
    code = follow(store, PAGE_VIEWS, [], None, T0 + 10 * MINUTE, "json", 0.0, Steps([]), out, clock)  # type: ignore[arg-type]
    assert code == 0
    assert [(r["key"], r["final"]) for r in printed(out)] == [("/home", True)]


def test_the_bearer_scheme_is_case_insensitive() -> None:
    token = "case-token-0123456789"
    app = make_app({"page-views": PipelineReader(PAGE_VIEWS, MemoryFinalStore())}, token=token)
    with TestClient(app) as client:
        for scheme in ("Bearer", "bearer", "BEARER"):
            ok = client.get("/api/v1/pipelines", headers={"Authorization": f"{scheme} {token}"})
            assert ok.status_code == 200, scheme
        refused = client.get("/api/v1/pipelines", headers={"Authorization": f"Basic {token}"})
        assert refused.status_code == 401
