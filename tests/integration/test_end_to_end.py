"""The walking skeleton end to end on the emulator, through the command line:
produce a known set of events (some malformed, some late), run until idle, query, and
compare with the independent computation in tests/oracle.py (the two sketches within
their error bounds) and, exactly, with a clean in-memory run of the engine."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import AwsEnv
from tests.integration.events import page_view_lines
from tests.integration.rerun import assert_same_as_clean_run
from tests.oracle import assert_matches, compute, dead_letter_ids, drain_queue, read_stream

pytestmark = pytest.mark.emulator


def shardflow(aws: AwsEnv, *args: str, stdin: bytes | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [*aws.cli(), *args], input=stdin, env=aws.env, capture_output=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_produce_run_query_matches_independent_computation(aws: AwsEnv, tmp_path) -> None:
    lines = page_view_lines(2_000, seed=11)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")

    summary = shardflow(aws, "produce", str(events))
    assert "events sent       2000" in summary

    shardflow(aws, "run", "page-views", "--until-idle", "2")
    stored = json.loads(shardflow(aws, "query", "page-views", "--format", "json"))

    shards = read_stream(aws.clients.kinesis, aws.settings.stream)
    expected = compute(shards)
    assert expected.invalid and expected.late, "the data set must exercise both reasons"
    assert_matches(stored, expected)
    assert_same_as_clean_run(stored, shards)
    assert any(row["final"] for row in stored) and not all(row["final"] for row in stored)

    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert dead_letter_ids(letters, "invalid") == expected.invalid
    assert dead_letter_ids(letters, "late") == expected.late
    assert len(letters) == len(expected.invalid) + len(expected.late), "no duplicates"
    body = letters[0]
    for field in (
        "reason",
        "error",
        "pipeline",
        "shard_id",
        "sequence_number",
        "sub_sequence_number",
        "data",
    ):
        assert field in body


def test_a_second_run_changes_nothing(aws: AwsEnv) -> None:
    """Running again over the same stream is a no-op: checkpoints hold."""
    lines = page_view_lines(300, seed=5)
    shardflow(aws, "produce", "-", stdin=b"\n".join(lines))
    shardflow(aws, "run", "--until-idle", "1")
    first = shardflow(aws, "query", "page-views", "--format", "json")
    shardflow(aws, "run", "--until-idle", "1")
    assert shardflow(aws, "query", "page-views", "--format", "json") == first
    expected = compute(read_stream(aws.clients.kinesis, aws.settings.stream))
    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert len(letters) == len(expected.invalid) + len(expected.late), "nothing sent twice"


def test_query_filters_by_key_and_time(aws: AwsEnv) -> None:
    lines = page_view_lines(400, seed=3)
    shardflow(aws, "produce", "-", stdin=b"\n".join(lines))
    shardflow(aws, "run", "--until-idle", "1")
    everything = json.loads(shardflow(aws, "query", "page-views", "--format", "json"))
    key = everything[0]["key"]
    one_key = json.loads(shardflow(aws, "query", "page-views", "--key", key, "--format", "json"))
    assert one_key == [row for row in everything if row["key"] == key]

    second = sorted({row["window_start"] for row in everything})[1]
    since = json.loads(
        shardflow(
            aws, "query", "page-views", "--since", second, "--until", second, "--format", "json"
        )
    )
    assert since == []  # an empty range
    ranged = json.loads(
        shardflow(aws, "query", "page-views", "--since", second, "--format", "json")
    )
    assert ranged == [row for row in everything if row["window_start"] >= second]
    table = shardflow(aws, "query", "page-views", "--key", key)
    assert key in table and "window_start" in table
    csv_text = shardflow(aws, "query", "page-views", "--format", "csv")
    assert csv_text.splitlines()[0].startswith("pipeline,key,window_start,window_end,final")
    assert len(csv_text.splitlines()) == len(everything) + 1
