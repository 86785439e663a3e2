"""Building the pieces from settings: stores, sinks and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from processors.pipeline import Pipeline
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from shardflow.resources import (
    ResourceNames,
    ResourceReport,
    ensure_queue,
    ensure_resources,
    ensure_table,
)
from shardflow.settings import Settings
from streams.aws_errors import ResourceMissing, is_not_found
from streams.runner import EmbeddedRunner, RunnerOptions

if TYPE_CHECKING:
    from streams.clients import AwsClients


class MixedStreams(ValueError):
    """Pipelines that read different streams were asked to run in one process."""


def stream_of(settings: Settings, pipelines: Sequence[Pipeline[Any]]) -> str:
    """The one stream ``pipelines`` read; raises :class:`MixedStreams` naming each."""
    streams = {settings.stream_for(p.source) for p in pipelines}
    if len(streams) != 1:
        raise MixedStreams(
            "these pipelines read different streams ("
            + ", ".join(f"{p.name} reads {settings.stream_for(p.source)}" for p in pipelines)
            + "): start one `shardflow run` per stream, or name one with --stream"
        )
    return streams.pop()


def default_pipelines(settings: Settings, pipelines: Sequence[Pipeline[Any]]) -> list[str]:
    """What ``shardflow run`` runs when no pipeline is named: those that declare the
    configured stream as their source, or else those that read whatever is configured."""
    declared = [p.name for p in pipelines if p.source == settings.stream]
    return declared or [p.name for p in pipelines if p.source is None]


def resource_names(settings: Settings) -> ResourceNames:
    return ResourceNames(
        stream=settings.stream,
        table=settings.table,
        dead_letter_queue=settings.dead_letter_queue,
        alert_topic=settings.alert_topic,
        other_streams=(),
    )


def ensure_for(
    clients: AwsClients,
    settings: Settings,
    shards: int,
    pipelines: Sequence[Pipeline[Any]] = (),
) -> ResourceReport:
    """Every resource the configured names need (``shardflow up``, the demo), and the
    streams, tables and queues ``pipelines`` declare (each once)."""
    names = resource_names(settings)
    streams = {settings.stream_for(p.source) for p in pipelines} - {names.stream}
    names = replace(names, other_streams=tuple(sorted(streams)))
    report = ensure_resources(
        clients.kinesis, clients.dynamodb, clients.sqs, clients.sns, names, shards
    )
    # Declared sinks: their lines join the report; its URL and ARNs stay the defaults'.
    extra = ResourceReport()
    tables = {settings.table_for(p.sinks.results_table) for p in pipelines} - {names.table}
    for table in sorted(tables):
        ensure_table(clients.dynamodb, replace(names, table=table), extra)
    queues = {settings.dead_letter_queue_for(p.sinks.dead_letter_queue) for p in pipelines}
    for queue in sorted(queues - {names.dead_letter_queue}):
        ensure_queue(clients.sqs, replace(names, dead_letter_queue=queue), extra)
    report.created += extra.created
    report.existing += extra.existing
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
    """A runner for ``pipelines``, which must read one stream (:func:`stream_of`), with
    each pipeline's own table and queue."""
    settings = replace(settings, stream=stream_of(settings, pipelines))
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
