"""Building the pieces from settings: stores, sinks and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from processors.pipeline import Pipeline
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from shardflow.resources import ResourceNames, ResourceReport, ensure_resources
from shardflow.settings import Settings
from streams.aws_errors import ResourceMissing, is_not_found
from streams.runner import EmbeddedRunner, RunnerOptions

if TYPE_CHECKING:
    from streams.clients import AwsClients


def resource_names(settings: Settings) -> ResourceNames:
    return ResourceNames(
        stream=settings.stream,
        table=settings.table,
        dead_letter_queue=settings.dead_letter_queue,
        alert_topic=settings.alert_topic,
    )


def ensure_for(clients: AwsClients, settings: Settings, shards: int) -> ResourceReport:
    """Every resource the configured names need (``shardflow up``, the demo)."""
    return ensure_resources(
        clients.kinesis,
        clients.dynamodb,
        clients.sqs,
        clients.sns,
        resource_names(settings),
        shards,
    )


def queue_url(clients: AwsClients, name: str) -> str:
    try:
        return clients.sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if is_not_found(exc):
            raise ResourceMissing(
                f"dead-letter queue {name!r} not found: create it with `shardflow up`"
            ) from exc
        raise


def check_table(clients: AwsClients, table: str) -> None:
    try:
        clients.dynamodb.describe_table(TableName=table)
    except ClientError as exc:
        if is_not_found(exc):
            raise ResourceMissing(
                f"results table {table!r} not found: create it with `shardflow up`"
            ) from exc
        raise


def make_store(clients: AwsClients, settings: Settings) -> DynamoPartialStore:
    check_table(clients, settings.table)
    return DynamoPartialStore(clients.dynamodb, settings.table)


def make_runner(
    clients: AwsClients,
    settings: Settings,
    pipelines: Sequence[Pipeline[Any]],
    options: RunnerOptions | None = None,
) -> EmbeddedRunner:
    store = make_store(clients, settings)
    dead_letters = SqsDeadLetters(
        clients.sqs, queue_url(clients, settings.dead_letter_queue), settings.stream
    )
    try:
        summary = clients.kinesis.describe_stream_summary(StreamName=settings.stream)
    except ClientError as exc:
        if is_not_found(exc):
            raise ResourceMissing(
                f"stream {settings.stream!r} not found: create it with `shardflow up`"
            ) from exc
        raise
    described = summary["StreamDescriptionSummary"]
    created = described["StreamCreationTimestamp"]
    # A stream deleted and created again under the same name is another stream.
    identity = f"{described['StreamARN']}@{created.isoformat()}"
    return EmbeddedRunner(
        clients.kinesis,
        store,
        dead_letters,
        pipelines,
        settings.stream,
        options,
        stream_identity=identity,
    )
