"""KPL aggregation end to end on the emulator: `produce --aggregate` packs a known set of
events (some malformed, some late) into aggregates; the runner deaggregates them and
checkpoints by sub-sequence number. The stored aggregates must equal the independent
computation (tests/oracle.py) fed by a different deaggregator, aws-kinesis-agg's, and the
dead letters must name each rejected user record by (shard, sequence, sub-sequence)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AwsEnv
from tests.integration.events import page_view_lines
from tests.oracle import assert_matches, compute, dead_letter_ids, drain_queue, read_stream

pytest.importorskip("aws_kinesis_agg")

from tests.integration.kpl_reader import deaggregated

pytestmark = pytest.mark.emulator


def shardflow(aws: AwsEnv, *args: str) -> str:
    done = subprocess.run([*aws.cli(), *args], env=aws.env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_aggregated_events_are_counted_exactly_once(aws: AwsEnv, tmp_path: Path) -> None:
    lines = page_view_lines(3_000, seed=21)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")

    summary = shardflow(aws, "produce", str(events), "--aggregate")
    assert "events sent       3000" in summary
    records = int(summary.split("Kinesis records")[1].split()[0])
    assert records * 20 <= 3_000, summary  # far fewer Kinesis records than events

    shardflow(aws, "run", "page-views", "--until-idle", "2")
    stored = json.loads(shardflow(aws, "query", "page-views", "--format", "json"))

    raw = read_stream(aws.clients.kinesis, aws.settings.stream)
    shards = deaggregated(raw)
    assert sum(len(r) for r in shards.values()) == len(lines)
    assert sum(len(r) for r in raw.values()) < len(lines) / 20
    expected = compute(shards)
    assert expected.invalid and expected.late, "the data set must exercise both reasons"
    assert_matches(stored, expected)

    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert dead_letter_ids(letters, "invalid") == expected.invalid
    assert dead_letter_ids(letters, "late") == expected.late
    assert len(letters) == len(expected.invalid) + len(expected.late)
    assert any(sub > 0 for _, _, sub in expected.invalid | expected.late)
