"""The one definition of every AWS resource shardflow needs, and an idempotent ``ensure``.

Used by ``shardflow up``, by the test fixtures, and by LocalStack's init hook
(``localstack/init/ready.d/10-shardflow-resources.py``), which imports this module inside
the LocalStack container. So it needs nothing but the standard library, boto3 clients
passed in, and ``shardflow.settings`` (standard library only) for the default names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shardflow.settings import (
    DEFAULT_ALERT_TOPIC,
    DEFAULT_DEAD_LETTER_QUEUE,
    DEFAULT_STREAM,
    DEFAULT_TABLE,
    DEVICE_READINGS_STREAM,
)

DEFAULT_SHARDS = 2


@dataclass(frozen=True)
class ResourceNames:
    stream: str = DEFAULT_STREAM
    table: str = DEFAULT_TABLE
    dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE
    alert_topic: str = DEFAULT_ALERT_TOPIC
    other_streams: tuple[str, ...] = (DEVICE_READINGS_STREAM,)
    """Streams the shipped pipelines declare as their source besides ``stream``."""

    @property
    def streams(self) -> tuple[str, ...]:
        return (self.stream, *(s for s in self.other_streams if s != self.stream))


def stream_definition(names: ResourceNames, shards: int) -> dict[str, Any]:
    """CreateStream request: a provisioned stream."""
    return {"StreamName": names.stream, "ShardCount": shards}


def table_definition(names: ResourceNames) -> dict[str, Any]:
    """CreateTable request: the results table (layout in processors/sinks/dynamodb_store.py)."""
    return {
        "TableName": names.table,
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def queue_definition(names: ResourceNames) -> dict[str, Any]:
    """CreateQueue request: dead letters are kept for the maximum 14 days."""
    return {
        "QueueName": names.dead_letter_queue,
        "Attributes": {"MessageRetentionPeriod": "1209600"},
    }


def topic_definition(names: ResourceNames) -> dict[str, Any]:
    """CreateTopic request: the alert topic (a FIFO topic when its name ends in
    ``.fifo``; alerts carry their own deduplication ids)."""
    if names.alert_topic.endswith(".fifo"):
        return {
            "Name": names.alert_topic,
            "Attributes": {"FifoTopic": "true", "ContentBasedDeduplication": "false"},
        }
    return {"Name": names.alert_topic}


def ttl_definition(names: ResourceNames) -> dict[str, Any]:
    """UpdateTimeToLive request: items carrying ``expires_at`` (epoch seconds) expire."""
    return {
        "TableName": names.table,
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "expires_at"},
    }


@dataclass
class ResourceReport:
    """What ``ensure_resources`` found or made."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    stream_arn: str = ""
    shard_count: int = 0
    queue_url: str = ""
    topic_arn: str = ""

    def lines(self) -> list[str]:
        out = [f"created {name}" for name in self.created]
        out += [f"exists  {name}" for name in self.existing]
        return out


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _wait(
    check: Callable[[], bool], what: str, timeout: float, sleep: Callable[[float], None]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not become ACTIVE within {timeout:.0f}s")
        sleep(0.25)


def ensure_stream(
    kinesis: Any,
    names: ResourceNames,
    shards: int,
    report: ResourceReport,
    timeout: float = 120,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    label = f"stream {names.stream}"
    try:
        kinesis.create_stream(**stream_definition(names, shards))
        report.created.append(f"{label} ({shards} shards)")
    except Exception as exc:
        if _code(exc) != "ResourceInUseException":
            raise
        report.existing.append(label)

    def active() -> bool:
        summary = kinesis.describe_stream_summary(StreamName=names.stream)[
            "StreamDescriptionSummary"
        ]
        report.stream_arn = summary["StreamARN"]
        report.shard_count = summary.get("OpenShardCount", 0)
        return bool(summary["StreamStatus"] == "ACTIVE")

    _wait(active, label, timeout, sleep)


def ensure_table(
    dynamodb: Any,
    names: ResourceNames,
    report: ResourceReport,
    timeout: float = 120,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    label = f"table {names.table}"
    try:
        dynamodb.create_table(**table_definition(names))
        report.created.append(label)
    except Exception as exc:
        if _code(exc) != "ResourceInUseException":
            raise
        report.existing.append(label)

    def active() -> bool:
        table = dynamodb.describe_table(TableName=names.table)["Table"]
        return bool(table["TableStatus"] == "ACTIVE")

    _wait(active, label, timeout, sleep)
    ttl = dynamodb.describe_time_to_live(TableName=names.table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        dynamodb.update_time_to_live(**ttl_definition(names))


def ensure_queue(sqs: Any, names: ResourceNames, report: ResourceReport) -> None:
    label = f"queue {names.dead_letter_queue}"
    try:
        report.queue_url = sqs.get_queue_url(QueueName=names.dead_letter_queue)["QueueUrl"]
        report.existing.append(label)
    except Exception as exc:
        if "NonExistentQueue" not in _code(exc) and _code(exc) != "QueueDoesNotExist":
            raise
        report.queue_url = sqs.create_queue(**queue_definition(names))["QueueUrl"]
        report.created.append(label)


def ensure_topic(sns: Any, names: ResourceNames, report: ResourceReport) -> None:
    # CreateTopic is idempotent for the same name and attributes.
    label = f"topic {names.alert_topic}"
    existing = {
        topic["TopicArn"].rsplit(":", 1)[-1]
        for page in sns.get_paginator("list_topics").paginate()
        for topic in page.get("Topics", [])
    }
    report.topic_arn = sns.create_topic(**topic_definition(names))["TopicArn"]
    (report.existing if names.alert_topic in existing else report.created).append(label)


def ensure_resources(
    kinesis: Any,
    dynamodb: Any,
    sqs: Any,
    sns: Any,
    names: ResourceNames,
    shards: int = DEFAULT_SHARDS,
    timeout: float = 120,
) -> ResourceReport:
    """Create what is missing, leave what exists, and wait until everything is ACTIVE.

    An existing stream keeps its shard count; ``shards`` applies only when creating it.
    """
    if shards < 1:
        raise ValueError(f"a stream needs at least one shard, got {shards}")
    report = ResourceReport()
    for other in names.streams[1:]:
        ensure_stream(kinesis, replace(names, stream=other), shards, report, timeout)
    # The configured stream last: the report's ARN and shard count are its.
    ensure_stream(kinesis, names, shards, report, timeout)
    ensure_table(dynamodb, names, report, timeout)
    ensure_queue(sqs, names, report)
    ensure_topic(sns, names, report)
    return report
