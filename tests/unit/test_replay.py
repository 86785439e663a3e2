"""``shardflow replay``: a pipeline over a JSON-lines file, in memory, with no AWS.

The file is one shard, read in order; its end ends the shard, so every window is final.
Invalid and late lines are counted, not aggregated.
"""

from __future__ import annotations

import io

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.windows import Window
from schemas.timestamps import format_iso8601
from shardflow.replay import replay_file

MINUTE = 60_000
T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z


def line(ts: int | str, page: str, **fields: object) -> bytes:
    return orjson.dumps({"event_id": f"e{ts}", "ts": ts, "page": page, **fields})


def test_replay_a_small_file() -> None:
    text = b"\n".join(
        [
            line(T0 + 1_000, "/a", value=2, latency_ms=10, user_id="u1"),
            line(format_iso8601(T0 + 30_000), "/a", value=1.5, latency_ms=20, user_id="u2"),
            b"",  # blank lines are skipped, not counted
            b"{not json",
            line(T0 + 45_000, "/b", user_id="u1"),
            line(T0 + 75_000, "/a"),  # watermark now T0+65s: the first minute is closed
            line(T0 + 20_000, "/a", value=100, latency_ms=900, user_id="u3"),  # late: not used
            line(T0 + 130_000, "/b") + b"\r",  # a CRLF line ending
            b"   ",
        ]
    )
    outcome = replay_file(PAGE_VIEWS, io.BytesIO(text))

    windows = {(r.key, r.window): r.values for r in outcome.results}
    assert windows == {
        ("/a", Window(T0, T0 + MINUTE)): {
            "views": 2,
            "revenue": 3.5,
            "latency_min": 10,
            "latency_max": 20,
            # p99 of [10, 20] is rank floor(0.99 * 1) = 0: 10, to the sketch's 1%
            "latency_p99": pytest.approx(10, rel=0.01),
            "unique_users": 2,
        },
        ("/a", Window(T0 + MINUTE, T0 + 2 * MINUTE)): {
            "views": 1,
            "revenue": 0,
            "latency_min": None,
            "latency_max": None,
            "latency_p99": None,
            "unique_users": 0,
        },
        ("/b", Window(T0, T0 + MINUTE)): {
            "views": 1,
            "revenue": 0,
            "latency_min": None,
            "latency_max": None,
            "latency_p99": None,
            "unique_users": 1,
        },
        ("/b", Window(T0 + 2 * MINUTE, T0 + 3 * MINUTE)): {
            "views": 1,
            "revenue": 0,
            "latency_min": None,
            "latency_max": None,
            "latency_p99": None,
            "unique_users": 0,
        },
    }
    assert [(r.key, r.window.start_ms) for r in outcome.results] == sorted(
        (key, window.start_ms) for key, window in windows
    )
    assert all(r.final for r in outcome.results)
    assert all(r.pipeline == "page-views" for r in outcome.results)
    assert outcome.events == 7
    assert outcome.dead_letters == {"invalid": 1, "late": 1}
    assert outcome.summary_line() == "replayed 7 lines: 1 invalid, 1 late"


def test_replay_an_empty_file() -> None:
    outcome = replay_file(PAGE_VIEWS, io.BytesIO(b""))
    assert outcome.results == []
    assert outcome.events == 0
    assert outcome.summary_line() == "replayed 0 lines: 0 invalid, 0 late"


def test_replay_a_file_longer_than_one_chunk() -> None:
    """Replay flushes every few thousand lines; windows that span a flush, and lateness
    decided across it, come out the same as in one piece (sketches included: they are
    stored and continued at every flush, and their merges are exact)."""
    count = 12_000
    lines = [
        line(T0 + 1_000 * i, f"/p{i % 3}", value=1, latency_ms=i % 997, user_id=f"u{i % 41}")
        for i in range(count)
    ]
    lines[7_000] = line(T0, "/p0")  # two hours late by then
    text = b"\n".join(lines)
    outcome = replay_file(PAGE_VIEWS, io.BytesIO(text), chunk_lines=5_000)

    assert outcome.events == count
    assert outcome.dead_letters == {"late": 1}
    assert sum(r.values["views"] for r in outcome.results) == count - 1
    assert sum(r.values["revenue"] for r in outcome.results) == count - 1
    assert len(outcome.results) == 3 * (count // 60)
    assert all(r.final for r in outcome.results)
    in_one_piece = replay_file(PAGE_VIEWS, io.BytesIO(text), chunk_lines=count + 1)
    assert [(r.key, r.window, r.values) for r in outcome.results] == [
        (r.key, r.window, r.values) for r in in_one_piece.results
    ]
