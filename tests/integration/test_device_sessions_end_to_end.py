"""The second shipped pipeline end to end on the emulator: device readings produced to a
2-shard stream, sessionized by the runner, queried back, and compared with sessions
computed the textbook way (sort each device's readings, cut at gaps of 5 minutes or
more). Then a pipeline a user declares, with its own source stream, table and queue."""

from __future__ import annotations

import json
import random
import subprocess
from collections import defaultdict
from dataclasses import replace
from typing import Any

import orjson
import pytest

from processors.pipeline import Sinks
from processors.pipelines import PIPELINES
from processors.pipelines.device_sessions import SESSION_GAP_MS
from processors.pipelines.page_views import PAGE_VIEWS
from schemas.timestamps import format_iso8601
from shardflow.cli import main
from tests.conftest import AwsEnv
from tests.oracle import drain_queue, exact_quantile, quantile_within_bounds

pytestmark = pytest.mark.emulator

T0 = 1_795_773_600_000


def shardflow(aws: AwsEnv, *args: str) -> str:
    done = subprocess.run([*aws.cli(), *args], env=aws.env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def readings(seed: int) -> list[dict[str, Any]]:
    """Six devices reporting in global time order (so nothing is late), with pauses
    longer than the session gap now and then, and an error code on some readings."""
    rng = random.Random(seed)
    out = []
    clocks = {f"device-{n}": T0 + n * 7_000 for n in range(6)}
    for _ in range(240):
        device = rng.choice(sorted(clocks))
        pause = rng.choice([20_000, 60_000, 200_000, SESSION_GAP_MS, 9 * 60_000])
        clocks[device] += pause
        reading: dict[str, Any] = {
            "device_id": device,
            "ts": clocks[device],
            "temperature_c": rng.randint(-200, 400) / 10,
            "battery_pct": rng.randint(0, 100),
        }
        if rng.random() < 0.2:
            reading["error"] = rng.choice(["E1", "E2", "E3", "E4"])
        out.append(reading)
    return sorted(out, key=lambda r: r["ts"])


def textbook_sessions(events: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_device[event["device_id"]].append(event)
    out = {}
    for device, items in by_device.items():
        items.sort(key=lambda e: e["ts"])
        runs = [[items[0]]]
        for item in items[1:]:
            if item["ts"] - runs[-1][-1]["ts"] >= SESSION_GAP_MS:
                runs.append([item])
            else:
                runs[-1].append(item)
        for run in runs:
            errors: dict[str, int] = defaultdict(int)
            for item in run:
                if "error" in item:
                    errors[item["error"]] += 1
            temperatures = [item["temperature_c"] for item in run]
            out[device, format_iso8601(run[0]["ts"])] = {
                "window_end": format_iso8601(run[-1]["ts"] + SESSION_GAP_MS),
                "readings": len(run),
                "temperature_mean": sum(temperatures) / len(temperatures),
                "temperature_max": max(temperatures),
                "temperature_p95": exact_quantile(temperatures, 0.95),
                "battery_first": run[0]["battery_pct"],
                "battery_last": run[-1]["battery_pct"],
                "top_errors": sorted(
                    ([code, count] for code, count in errors.items()),
                    key=lambda pair: (-pair[1], pair[0]),
                )[:3],
            }
    return out


def test_device_sessions_through_the_command_line_match_the_textbook(
    aws: AwsEnv, tmp_path: Any
) -> None:
    events = readings(seed=3)
    source = tmp_path / "readings.jsonl"
    source.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    shardflow(aws, "produce", str(source), "--partition-key", "device_id")
    shardflow(aws, "run", "device-sessions", "--until-idle", "2")
    stored = json.loads(shardflow(aws, "query", "device-sessions", "--format", "json"))

    expected = textbook_sessions(events)
    got = {(row["key"], row["window_start"]): row for row in stored}
    assert sorted(got) == sorted(expected)
    for slot, want in expected.items():
        row = got[slot]
        assert row["window_end"] == want["window_end"], slot
        for name in ("readings", "temperature_max", "battery_first", "battery_last", "top_errors"):
            assert row[name] == want[name], (slot, name)
        assert row["temperature_mean"] == pytest.approx(want["temperature_mean"])
        assert quantile_within_bounds(row["temperature_p95"], want["temperature_p95"])
    assert len({row["key"] for row in stored}) == 6
    assert len(stored) > 6, "the data set must have devices with several sessions"
    assert drain_queue(aws.clients.sqs, aws.queue_url) == []


def test_a_declared_pipeline_reads_its_own_stream_and_writes_its_own_sinks(
    aws: AwsEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    suffix = aws.settings.stream.rsplit("-", 1)[-1]
    mine = replace(
        PAGE_VIEWS,
        name=f"checkout-{suffix}",
        source=f"t-checkout-{suffix}",
        sinks=Sinks(results_table=f"t-checkout-{suffix}", dead_letter_queue=f"t-cdl-{suffix}"),
    )
    monkeypatch.setitem(PIPELINES, mine.name, mine)
    for name, value in aws.env.items():
        monkeypatch.setenv(name, value)
    for variable in ("SHARDFLOW_STREAM", "SHARDFLOW_TABLE", "SHARDFLOW_DEAD_LETTER_QUEUE"):
        monkeypatch.delenv(variable)  # so the declared names apply

    assert main(["up", "--shards", "1"]) == 0
    created = capsys.readouterr().out
    named = [
        tuple(line.split()[1:3])
        for line in created.splitlines()
        if line.split()[0] in ("created", "exists")
    ]
    assert len(named) == len(set(named)), f"a resource reported twice: {created}"
    for resource in (mine.source, mine.sinks.results_table, mine.sinks.dead_letter_queue):
        assert f"{resource}" in created, resource
    lines = [orjson.dumps({"event_id": str(n), "ts": T0 + n, "page": "/pay"}) for n in range(5)] + [
        b"{broken"
    ]
    events = tmp_path / "checkout.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["--stream", mine.source or "", "produce", str(events)]) == 0
    assert main(["run", mine.name, "--until-idle", "1"]) == 0
    capsys.readouterr()
    assert main(["query", mine.name, "--format", "json"]) == 0
    (window,) = json.loads(capsys.readouterr().out)
    assert window["views"] == 5
    # The rejected line went to the pipeline's own queue.
    sqs = aws.clients.sqs
    url = sqs.get_queue_url(QueueName=mine.sinks.dead_letter_queue)["QueueUrl"]
    assert [letter["reason"] for letter in drain_queue(sqs, url)] == ["invalid"]
    # And nothing reached the table the other pipelines use.
    items = aws.clients.dynamodb.scan(TableName=aws.settings.table)["Items"]
    assert not any(mine.name in item["pk"]["S"] for item in items)
