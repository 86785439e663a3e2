"""Final rows and alerts on the emulator, end to end.

The story: events go into the stream, the runner aggregates them; every window that
becomes final gets one final row equal to the merge of its partial rows, and every rule
it breaches raises one SNS message, which reaches an SQS queue subscribed to the topic
(filtered by severity for a second queue). A crash between writing final rows and
recording the alerts sent neither loses an alert nor repeats one under a new id.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.alerts import rule
from processors.finalizer import ALERTS_PER_RECORD, Finalizer
from processors.pipeline import Pipeline, Sinks
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.sns_alerts import SnsAlertSink
from processors.windowing.results import merge_rows
from shardflow.wiring import make_runner
from streams.runner import RunnerOptions
from tests.conftest import AwsEnv
from tests.integration.events import page_view_lines
from tests.integration.test_end_to_end import shardflow

pytestmark = pytest.mark.emulator

RULES = (rule("views >= 30"), rule("latency_max > 895", severity="critical"))


def alerting(base: Pipeline[Any] = PAGE_VIEWS) -> Pipeline[Any]:
    return replace(base, sinks=Sinks(alerts=RULES))


def subscribe(aws: AwsEnv, name: str, filter_policy: dict[str, Any] | None = None) -> str:
    sqs, sns = aws.clients.sqs, aws.clients.sns
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
    sns.subscribe(
        TopicArn=aws.report.topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes
    )
    return url


def received(aws: AwsEnv, url: str) -> list[dict[str, Any]]:
    """Every SNS notification in the queue (the envelope, with the alert body parsed)."""
    out = []
    while True:
        messages = aws.clients.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            envelope = json.loads(message["Body"])
            envelope["alert"] = json.loads(envelope["Message"])
            out.append(envelope)
            aws.clients.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def load(aws: AwsEnv, count: int, seed: int, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(page_view_lines(count, seed=seed)) + b"\n")
    assert f"events sent       {count}" in shardflow(aws, "produce", str(events))


def expected_alerts(store: DynamoPartialStore, pipe: Pipeline[Any]) -> set[tuple[str, str, int]]:
    return {
        (each.text, row.key, row.window_start_ms)
        for row in store.read_finals(pipe.name)
        for each in RULES
        if each.breached(row.values.get(each.aggregate))
    }


def test_final_rows_equal_the_merge_of_partial_rows_and_alerts_reach_subscribers(
    aws: AwsEnv, tmp_path: Path
) -> None:
    everything = subscribe(aws, f"{aws.settings.table}-all")
    critical = subscribe(aws, f"{aws.settings.table}-crit", {"severity": ["critical"]})
    pipe = alerting()
    load(aws, 3_000, seed=5, tmp_path=tmp_path)
    runner = make_runner(aws.clients, aws.settings, [pipe], RunnerOptions(finalize_interval=0.5))
    runner.run(until_idle=2)

    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    finals = store.read_finals(pipe.name)
    shards = store.read_progress(pipe.name)
    merged = [r for r in merge_rows(pipe, store.read_rows(pipe.name), shards) if r.final]
    assert finals, "some windows must be final"
    assert {(r.key, r.window_start_ms): r.values for r in finals} == {
        (r.key, r.window.start_ms): orjson.loads(orjson.dumps(r.values)) for r in merged
    }

    alerts = received(aws, everything)
    expected = expected_alerts(store, pipe)
    assert expected, "the data set must breach a rule"
    got = [(m["alert"]["rule"], m["alert"]["key"], m["alert"]["window_start_ms"]) for m in alerts]
    assert sorted(got) == sorted(expected), "one message per breached rule per final window"
    first = alerts[0]
    assert {"pipeline", "key", "rule", "severity"} <= set(first["MessageAttributes"])
    assert first["Subject"].startswith("[")
    assert first["alert"]["alert_id"] and first["alert"]["values"]["views"] >= 0

    filtered = received(aws, critical)
    assert sorted(m["alert"]["alert_id"] for m in filtered) == sorted(
        m["alert"]["alert_id"] for m in alerts if m["alert"]["severity"] == "critical"
    )
    assert filtered, "the data set must breach the critical rule too"
    assert all(m["alert"]["severity"] == "critical" for m in filtered)
    store.close()


class CrashAfterPublish(DynamoPartialStore):
    """Publishes, then dies before recording what it sent."""

    def record_alerts_sent(self, *args: Any) -> None:
        raise SystemExit("killed between publishing and recording")


def test_a_crash_between_publishing_and_recording_repeats_alerts_under_the_same_id(
    aws: AwsEnv, tmp_path: Path
) -> None:
    queue = subscribe(aws, f"{aws.settings.table}-all")
    pipe = alerting()
    load(aws, 2_000, seed=8, tmp_path=tmp_path)
    # Partial rows only: the runner's own finalizer is not there yet.
    runner = make_runner(aws.clients, aws.settings, [PAGE_VIEWS], finalize=False)
    runner.run(until_idle=2)

    sink = SnsAlertSink(aws.clients.sns, aws.report.topic_arn)
    crashing = CrashAfterPublish(aws.clients.dynamodb, aws.settings.table)
    with pytest.raises(SystemExit):
        Finalizer(pipe, crashing, sink).run_once()
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    Finalizer(pipe, store, sink).run_once()
    Finalizer(pipe, store, sink).run_once()  # and a pass with nothing new sends nothing

    alerts = received(aws, queue)
    expected = expected_alerts(store, pipe)
    by_id: dict[str, list[tuple[str, str, int]]] = {}
    for m in alerts:
        body = m["alert"]
        by_id.setdefault(body["alert_id"], []).append(
            (body["rule"], body["key"], body["window_start_ms"])
        )
    assert {occurrences[0] for occurrences in by_id.values()} == expected, "none lost"
    assert all(len(set(occurrences)) == 1 for occurrences in by_id.values())
    assert len(by_id) == len(expected), "a repeat carries the alert_id of the first send"
    repeated = [i for i, occurrences in by_id.items() if len(occurrences) == 2]
    assert len(repeated) == min(ALERTS_PER_RECORD, len(expected)), (
        "the batch published before the crash is published again, and only that batch"
    )
    assert all(len(occurrences) <= 2 for occurrences in by_id.values())
    crashing.close()
    store.close()


class CrashBeforePublish(DynamoPartialStore):
    def unsent_alerts(self, pipeline: str, alert_ids: Any) -> set[str]:
        raise SystemExit("killed after the final rows, before any alert")


def test_a_crash_after_final_rows_before_alerts_loses_none(aws: AwsEnv, tmp_path: Path) -> None:
    queue = subscribe(aws, f"{aws.settings.table}-all")
    pipe = alerting()
    load(aws, 2_000, seed=9, tmp_path=tmp_path)
    make_runner(aws.clients, aws.settings, [PAGE_VIEWS], finalize=False).run(until_idle=2)

    sink = SnsAlertSink(aws.clients.sns, aws.report.topic_arn)
    crashing = CrashBeforePublish(aws.clients.dynamodb, aws.settings.table)
    with pytest.raises(SystemExit):
        Finalizer(pipe, crashing, sink).run_once()
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    assert store.read_finals(pipe.name), "the final rows were written before the crash"
    Finalizer(pipe, store, sink).run_once()

    alerts = received(aws, queue)
    ids = [m["alert"]["alert_id"] for m in alerts]
    assert len(ids) == len(set(ids)) == len(expected_alerts(store, pipe)), "each exactly once"
    crashing.close()
    store.close()
