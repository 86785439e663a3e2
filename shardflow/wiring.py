"""Building the pieces from settings: stores, sinks and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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
        # A chosen stream is what every pipeline reads: no other stream is needed.
        **({"other_streams": ()} if "stream" in settings.chosen else {}),
    )


def ensure_for(
    clients: AwsClients,
    settings: Settings,
    shards: int,
    pipelines: Sequence[Pipeline[Any]] = (),
) -> ResourceReport:
    """Every resource the configured names need (``shardflow up``, the demo), and the
    sources and sinks ``pipelines`` declare."""
    names = resource_names(settings)
    report = ensure_resources(
        clients.kinesis, clients.dynamodb, clients.sqs, clients.sns, names, shards
    )
    declared = {
        replace(
            names,
            stream=settings.stream_for(p.source),
            table=settings.table_for(p.sinks.results_table),
            dead_letter_queue=settings.dead_letter_queue_for(p.sinks.dead_letter_queue),
            other_streams=(),
        )
        for p in pipelines
    }
    for extra in declared - {replace(names, other_streams=())}:
        more = ensure_resources(
            clients.kinesis, clients.dynamodb, clients.sqs, clients.sns, extra, shards
        )
        report.created += [line for line in more.created if line not in report.created]
        report.existing += [
            line
            for line in more.existing
            if line not in report.existing and line not in report.created
        ]
    return report


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


def make_store(
    clients: AwsClients, settings: Settings, pipeline: Pipeline[Any] | None = None
) -> DynamoPartialStore:
    """The store of ``pipeline``'s results (its declared table, or the configured one)."""
    table = settings.table_for(pipeline.sinks.results_table if pipeline else None)
    check_table(clients, table)
    return DynamoPartialStore(clients.dynamodb, table)


def make_runner(
    clients: AwsClients,
    settings: Settings,
    pipelines: Sequence[Pipeline[Any]],
    options: RunnerOptions | None = None,
) -> EmbeddedRunner:
    stores: dict[str, DynamoPartialStore] = {}
    letters: dict[str, SqsDeadLetters] = {}
    by_table: dict[str, DynamoPartialStore] = {}
    by_queue: dict[str, SqsDeadLetters] = {}
    for pipeline in pipelines:
        table = settings.table_for(pipeline.sinks.results_table)
        if table not in by_table:
            by_table[table] = make_store(clients, settings, pipeline)
        stores[pipeline.name] = by_table[table]
        queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
        if queue not in by_queue:
            by_queue[queue] = SqsDeadLetters(
                clients.sqs, queue_url(clients, queue), settings.stream
            )
        letters[pipeline.name] = by_queue[queue]
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
        stores,
        letters,
        pipelines,
        settings.stream,
        options,
        stream_identity=identity,
    )
