"""``shardflow query`` and ``shardflow top`` on the emulator, as a user types them.

The story: three shards have written ten minutes of page views, ending two minutes ago.
A user asks for two pages over the last five minutes, pages through everything as CSV,
reads the aligned table, ranks the pages of the latest window, makes the usual mistakes,
and follows one page while the last windows fill up and become final.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time

import pytest

from processors.direct_load import StoreLoader
from tests.conftest import AwsEnv
from tests.contract.test_query_reads import PAGES
from tests.integration.served import load_recent, shifted

pytestmark = pytest.mark.emulator

MINUTE = 60_000


def shardflow(aws: AwsEnv, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*aws.cli(), *args], env=aws.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr
    return done


@pytest.fixture
def loaded(aws: AwsEnv) -> tuple[AwsEnv, int, StoreLoader]:
    """Ten minutes of page views on three shards, the last minute ending 2 minutes ago."""
    t0, loader = load_recent(aws)
    return aws, t0, loader


def test_several_keys_over_the_last_minutes(loaded: tuple[AwsEnv, int, StoreLoader]) -> None:
    aws, t0, _ = loaded
    out = shardflow(
        aws,
        "query",
        "page-views",
        "--key",
        "/p05",
        "--key",
        "/p03",
        "--since",
        "5m",
        "--format",
        "json",
    ).stdout
    rows = json.loads(out)
    now = int(time.time() * 1000)
    # Windows ending after five minutes ago: the data's last minutes, for both keys.
    cutoff = now - 5 * MINUTE
    minutes = [m for m in range(10) if t0 + (m + 1) * MINUTE > cutoff]
    assert minutes, "the data must reach into the last five minutes"
    assert [(row["key"], row["views"]) for row in rows] == [
        *(("/p03", 12) for _ in minutes),
        *(("/p05", 18) for _ in minutes),
    ]
    assert rows[0]["window_start"].endswith("Z") and rows[0]["pipeline"] == "page-views"


def test_paging_through_everything(loaded: tuple[AwsEnv, int, StoreLoader]) -> None:
    aws, _, _ = loaded
    whole = shardflow(aws, "query", "page-views", "--format", "csv").stdout.splitlines()
    assert len(whole) == 1 + 10 * len(PAGES)
    assert whole[0].startswith("pipeline,key,window_start,window_end,final,views,revenue")
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(40):
        page = shardflow(aws, "query", "page-views", "--format", "csv", "--limit", "25", *cursor)
        lines = page.stdout.splitlines()
        assert lines[0] == whole[0] and len(lines) <= 26
        seen.extend(lines[1:])
        if "--cursor" not in page.stderr:
            break
        cursor = ["--cursor", page.stderr.split("--cursor ")[1].split()[0]]
    assert seen == whole[1:]  # by window start, then key


def test_the_table_is_aligned_and_marks_final_windows(
    loaded: tuple[AwsEnv, int, StoreLoader],
) -> None:
    aws, _, _ = loaded
    table = shardflow(aws, "query", "page-views", "--key", "/p11").stdout.splitlines()
    header, rule, *rows = table
    assert header.split()[:4] == ["key", "window_start", "window_end", "final"]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 10
    assert [row.split()[3] for row in rows] == ["final"] * 9 + ["open"]
    column = header.index("views") + len("views")
    assert all(row[:column].endswith("36") for row in rows)  # numbers right-aligned


def test_top_keys_of_the_latest_window(loaded: tuple[AwsEnv, int, StoreLoader]) -> None:
    aws, t0, _ = loaded
    ranked = json.loads(
        shardflow(aws, "top", "page-views", "--by", "views", "--k", "3", "--format", "json").stdout
    )
    assert ranked["final"] is False and ranked["keys"] == 12
    assert [(r["rank"], r["key"], r["value"]) for r in ranked["top"]] == [
        (1, "/p11", 36),
        (2, "/p10", 33),
        (3, "/p09", 30),
    ]
    table = shardflow(aws, "top", "page-views", "--by", "latency_max", "--window", str(t0)).stdout
    assert "top 10 of 12 keys by latency_max" in table and "(final)" in table
    assert table.splitlines()[4].split() == ["1", "/p11", "110.00"]


def test_mistakes_get_clear_errors(aws: AwsEnv) -> None:
    wrong = shardflow(aws, "top", "page-views", "--by", "nope", code=2).stderr
    assert "aggregate 'nope' of 'page-views' is unknown; rank by one of: views, revenue" in wrong
    sessions = shardflow(aws, "top", "device-sessions", "--by", "readings", code=2).stderr
    assert "session windows" in sessions
    assert (
        "between 1 and 10,000"
        in shardflow(aws, "query", "page-views", "--limit", "0", code=2).stderr
    )
    bad = shardflow(aws, "query", "page-views", "--cursor", "xyz", code=2).stderr
    assert "not one a query returned" in bad
    assert (
        "a time ago such as 15m"
        in shardflow(aws, "query", "page-views", "--since", "1y", code=2).stderr
    )
    for text in (wrong, sessions, bad):
        assert "Traceback" not in text


def test_follow_prints_updates_until_every_window_is_final(
    loaded: tuple[AwsEnv, int, StoreLoader],
) -> None:
    aws, t0, loader = loaded
    until = t0 + 11 * MINUTE
    follower = subprocess.Popen(
        [
            *aws.cli(),
            "query",
            "page-views",
            "--key",
            "/p00",
            "--follow",
            "--format",
            "json",
            "--since",
            str(t0 + 8 * MINUTE),
            "--until",
            str(until),
            "--interval",
            "0.2",
        ],
        env=aws.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [(r["views"], r["final"]) for r in first] == [(3, True), (3, False)]
        for shard in range(3):  # minute 10 arrives; minute 9 is then final
            loader.send(shard, shifted(shard, 10, t0))
        loader.end_all()  # every shard ends: everything is final, and the follower stops
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    later = [json.loads(line) for line in out.splitlines()]
    assert follower.returncode == 0, err
    by_window: dict[str, list[tuple[int, bool]]] = {}
    for row in first + later:
        by_window.setdefault(row["window_start"], []).append((row["views"], row["final"]))
    assert [updates[-1] for updates in by_window.values()] == [(3, True)] * 3
    assert len(by_window) == 3  # minute 10 came, and minute 9 became final
    for updates in by_window.values():  # a window is printed again only when it changed
        assert all(a != b for a, b in itertools.pairwise(updates))
