"""``shardflow serve``: the HTTP contract, with Starlette's TestClient over in-memory stores.

The story: ten minutes of page views sit in the store. A client lists the pipelines, asks
for two keys over a range, walks every key of one window page by page, ranks the keys of
a final and of the latest window, and makes every mistake the API has a message for;
with a token configured, the API refuses requests without it and the page stays public.
(tests/integration/test_serve_http.py runs the same server over real HTTP, with
schemathesis checking the OpenAPI description against it.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from processors.direct_load import StoreLoader
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryFinalStore
from shardflow.serve import make_app
from shardflow.serve_api import PipelineReader
from shardflow.serve_setup import BadToken, read_token
from tests.contract.test_query_reads import MINUTE, PAGES, T0, events

NOW = T0 + 10 * MINUTE + 5_000
TOKEN = "s3cret-token-0123456789"


def loaded_store() -> MemoryFinalStore:
    store = MemoryFinalStore()
    loader = StoreLoader(PAGE_VIEWS, store, 3)
    for minute in range(10):
        for shard in range(3):
            loader.send(shard, events(shard, minute))
    loader.finalize()
    return store


def readers(store: Any) -> dict[str, PipelineReader]:
    return {
        "page-views": PipelineReader(PAGE_VIEWS, store),
        "device-sessions": PipelineReader(DEVICE_SESSIONS, MemoryFinalStore()),
    }


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(readers(loaded_store()), clock=lambda: NOW)) as test_client:
        yield test_client


def test_pipelines_describe_their_windows_and_aggregates(client: TestClient) -> None:
    listed = client.get("/api/v1/pipelines").json()["pipelines"]
    assert [p["name"] for p in listed] == ["page-views", "device-sessions"]
    page_views = listed[0]
    assert page_views["windows"] == {
        "kind": "tumbling",
        "size_ms": 60_000,
        "step_ms": 60_000,
        "gap_ms": None,
    }
    assert {"name": "views", "numeric": True, "rankable": True} in page_views["aggregates"]
    sessions = listed[1]
    assert sessions["windows"]["kind"] == "session" and sessions["windows"]["gap_ms"] == 300_000
    assert not any(a["rankable"] for a in sessions["aggregates"])
    status = client.get("/api/v1/pipelines/page-views").json()
    assert status["shards"] == 3
    assert status["final_through"] == "2026-11-18T11:16:01Z"


def test_two_keys_over_a_range(client: TestClient) -> None:
    response = client.get(
        "/api/v1/pipelines/page-views/windows",
        params=[("key", "/p05"), ("key", "/p00"), ("since", "7m"), ("until", "now")],
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["keys"] == ["/p00", "/p05"]
    assert body["since"] == "2026-11-18T11:10:05Z" and body["next_cursor"] is None
    got = [(w["key"], w["window_start"][11:16], w["views"], w["final"]) for w in body["windows"]]
    assert got == [
        *(("/p00", f"11:{m}", 3, m != "16") for m in ("10", "11", "12", "13", "14", "15", "16")),
        *(("/p05", f"11:{m}", 18, m != "16") for m in ("10", "11", "12", "13", "14", "15", "16")),
    ]


def test_the_default_range_is_the_last_hour(client: TestClient) -> None:
    body = client.get("/api/v1/pipelines/page-views/windows", params={"limit": 5}).json()
    assert body["until"] == "2026-11-18T11:17:05Z" and body["since"] == "2026-11-18T10:17:05Z"
    assert len(body["windows"]) == 5 and body["next_cursor"] is not None
    rest = client.get(
        "/api/v1/pipelines/page-views/windows",
        params={"limit": 1000, "cursor": body["next_cursor"]},
    ).json()
    assert len(body["windows"]) + len(rest["windows"]) == 10 * len(PAGES)


def test_every_key_of_one_window_page_by_page(client: TestClient) -> None:
    at = "2026-11-18T11:09:30Z"  # inside the third minute
    keys: list[str] = []
    cursor: list[tuple[str, str]] = []
    for _ in range(10):
        body = client.get(
            f"/api/v1/pipelines/page-views/windows/{at}", params=[("limit", "5"), *cursor]
        ).json()
        assert body["window_start"] == "2026-11-18T11:09:00Z" and body["keys"] == 12
        assert body["final"] is True
        keys.extend(w["key"] for w in body["windows"])
        if body["next_cursor"] is None:
            break
        cursor = [("cursor", body["next_cursor"])]
    assert keys == PAGES


def test_top_keys_of_a_final_window_and_of_the_latest(client: TestClient) -> None:
    final = client.get(
        "/api/v1/pipelines/page-views/top", params={"by": "views", "k": 2, "window": str(T0)}
    ).json()
    assert final["final"] is True and final["keys"] == 12
    assert final["top"] == [
        {"rank": 1, "key": "/p11", "value": 36},
        {"rank": 2, "key": "/p10", "value": 33},
    ]
    latest = client.get("/api/v1/pipelines/page-views/top", params={"by": "revenue"}).json()
    assert latest["window_start"] == "2026-11-18T11:16:00Z" and latest["final"] is False
    assert len(latest["top"]) == 10 and latest["top"][0] == {
        "rank": 1,
        "key": "/p11",
        "value": 54.0,
    }
    empty = client.get(
        "/api/v1/pipelines/page-views/top", params={"by": "views", "window": "1d"}
    ).json()
    assert empty["top"] == [] and empty["window_start"] is None


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        (
            "/api/v1/pipelines/nope",
            {},
            404,
            "unknown pipeline 'nope'; known pipelines: device-sessions, page-views",
        ),
        ("/api/v1/pipelines/nope/windows", {}, 404, "unknown pipeline"),
        (
            "/api/v1/pipelines/page-views/windows",
            {"since": "yesterday"},
            400,
            "since: time 'yesterday' is not a time",
        ),
        ("/api/v1/pipelines/page-views/windows", {"since": "8d"}, 400, "covers 11,520 windows"),
        (
            "/api/v1/pipelines/page-views/windows",
            {"since": "now", "until": "1m"},
            400,
            "must not be before since",
        ),
        (
            "/api/v1/pipelines/page-views/windows",
            {"limit": "0"},
            400,
            "limit must be between 1 and 10,000, got 0",
        ),
        (
            "/api/v1/pipelines/page-views/windows",
            {"limit": "ten"},
            400,
            "limit must be a whole number",
        ),
        (
            "/api/v1/pipelines/page-views/windows",
            {"cursor": "abc"},
            400,
            "not one a query returned",
        ),
        (
            "/api/v1/pipelines/page-views/windows",
            [("since", "1h"), ("since", "2h")],
            400,
            "give since once",
        ),
        ("/api/v1/pipelines/page-views/windows", {"key": "x" * 1025}, 400, "at most 1024 bytes"),
        ("/api/v1/pipelines/page-views/top", {}, 400, "by=one of views, revenue"),
        (
            "/api/v1/pipelines/page-views/top",
            {"by": "nope"},
            400,
            "aggregate 'nope' of 'page-views' is unknown",
        ),
        (
            "/api/v1/pipelines/page-views/top",
            {"by": "views", "k": "1001"},
            400,
            "k must be between 1 and 1,000",
        ),
        ("/api/v1/pipelines/device-sessions/top", {"by": "readings"}, 400, "session windows"),
        ("/api/v1/pipelines/device-sessions/windows/now", {}, 400, "session windows"),
        (
            "/api/v1/pipelines/page-views/windows/soon",
            {},
            400,
            "window: time 'soon' is not a time",
        ),
        ("/api/v1/nothing", {}, 404, "no such path"),
        ("/static/secrets.txt", {}, 404, "no such file"),
    ],
)
def test_mistakes_are_4xx_with_a_message(
    client: TestClient, path: str, params: Any, status: int, message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


def test_the_api_is_read_only(client: TestClient) -> None:
    response = client.post("/api/v1/pipelines/page-views/windows")
    assert response.status_code == 405
    assert "read-only" in response.json()["error"]
    assert "GET" in response.headers["allow"]


def test_a_pipeline_whose_table_is_missing_answers_503_saying_so() -> None:
    gone = {
        "page-views": PipelineReader(PAGE_VIEWS, None, "table t does not exist: run shardflow up")
    }
    with TestClient(make_app(gone)) as client:
        response = client.get("/api/v1/pipelines/page-views/windows")
        assert response.status_code == 503
        assert response.json() == {"error": "table t does not exist: run shardflow up"}
        assert client.get("/api/v1/pipelines").status_code == 200


def test_an_unexpected_error_is_a_json_500() -> None:
    class Broken(MemoryFinalStore):
        def read_progress(self, pipeline: str) -> Any:
            raise RuntimeError("disk on fire")

    with TestClient(make_app(readers(Broken())), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/pipelines/page-views")
        assert response.status_code == 500
        assert response.json() == {"error": "internal error (RuntimeError); see the server log"}


def test_with_a_token_the_api_needs_it_and_the_page_stays_public() -> None:
    app = make_app(readers(loaded_store()), token=TOKEN, clock=lambda: NOW)
    with TestClient(app) as client:
        refused = client.get("/api/v1/pipelines")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get("/api/v1/pipelines", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/api/v1/pipelines", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200
        assert client.get("/").status_code == 200
        assert "bearer" in client.get("/openapi.json").json()["components"]["securitySchemes"]


def test_the_dashboard_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/dashboard.js">' in page.text
    assert client.get("/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/dashboard.css").headers["content-type"].startswith("text/css")
    assert client.get("/health").json() == {"status": "ok"}


def test_tokens_come_from_a_file_or_the_environment(tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert read_token(str(path), {}) == TOKEN
    assert read_token(None, {"SHARDFLOW_SERVE_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, {}) is None
    path.write_text("short\n")
    with pytest.raises(BadToken, match="at least 16 printable ASCII"):
        read_token(str(path), {})
    with pytest.raises(BadToken, match="cannot read the token file"):
        read_token(str(tmp_path / "missing"), {})
