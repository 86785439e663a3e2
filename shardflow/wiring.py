"""Building the pieces from settings: stores, sinks and the runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from processors.finalizer import Finalizer
from processors.pipeline import Pipeline
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.sns_alerts import SnsAlertSink, topic_arn_for
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from shardflow.resources import (
    ResourceNames,
    ResourceReport,
    ensure_queue,
    ensure_resources,
    ensure_table,
    ensure_topic,
)
from shardflow.settings import Settings
from streams.aws_errors import ResourceMissing, is_not_found
from streams.finalize_schedule import FinalizeSchedule
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
    topics = {settings.alert_topic_for(p.sinks.alert_topic) for p in pipelines}
    for topic in sorted(topics - {names.alert_topic}):
        ensure_topic(clients.sns, replace(names, alert_topic=topic), extra)
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
    clients: AwsClients,
    settings: Settings,
    pipeline: Pipeline[Any] | None = None,
    pipelines: Sequence[Pipeline[Any]] = (),
) -> DynamoPartialStore:
    """The store of ``pipeline``'s results (its declared table, or the configured one);
    ``pipelines`` sharing it give their result TTLs."""
    table = settings.table_for(pipeline.sinks.results_table if pipeline else None)
    check_table(clients, table)
    ttls = {p.name: p.result_ttl_s for p in (*pipelines, *([pipeline] if pipeline else []))}
    return DynamoPartialStore(
        clients.dynamodb, table, {name: ttl for name, ttl in ttls.items() if ttl is not None}
    )


def make_alert_sink(
    clients: AwsClients, settings: Settings, pipeline: Pipeline[Any]
) -> SnsAlertSink:
    """The SNS sink of ``pipeline``'s alerts (its declared topic, or the configured one)."""
    topic = settings.alert_topic_for(pipeline.sinks.alert_topic)
    return SnsAlertSink(clients.sns, topic_arn_for(clients.sns, topic))


def stream_identity(clients: AwsClients, stream: str) -> str:
    """What shard progress records as the stream it belongs to: its ARN and creation
    time (a stream deleted and created again under the same name is another stream).
    Every runner (embedded, KCL, Lambda) must record the same, so they share a table."""
    try:
        summary = clients.kinesis.describe_stream_summary(StreamName=stream)
    except ClientError as exc:
        if is_not_found(exc):
            raise ResourceMissing(
                f"stream {stream!r} not found: create it with `shardflow up`"
            ) from exc
        raise
    described = summary["StreamDescriptionSummary"]
    created = described["StreamCreationTimestamp"]
    return f"{described['StreamARN']}@{created.isoformat()}"


def make_runner(
    clients: AwsClients,
    settings: Settings,
    pipelines: Sequence[Pipeline[Any]],
    options: RunnerOptions | None = None,
    finalize: bool = True,
) -> EmbeddedRunner:
    """A runner for ``pipelines``, which must read one stream (:func:`stream_of`), with
    each pipeline's own table, queue and alert topic; with ``finalize``, it writes final
    rows and sends alerts as windows become final."""
    settings = replace(settings, stream=stream_of(settings, pipelines))
    stores: dict[str, DynamoPartialStore] = {}
    letters: dict[str, SqsDeadLetters] = {}
    by_table: dict[str, DynamoPartialStore] = {}
    by_queue: dict[str, SqsDeadLetters] = {}
    finalizers: list[Finalizer] = []
    for pipeline in pipelines:
        table = settings.table_for(pipeline.sinks.results_table)
        if table not in by_table:
            sharing = [p for p in pipelines if settings.table_for(p.sinks.results_table) == table]
            by_table[table] = make_store(clients, settings, pipeline, sharing)
        stores[pipeline.name] = by_table[table]
        alerts = make_alert_sink(clients, settings, pipeline) if pipeline.sinks.alerts else None
        finalizers.append(Finalizer(pipeline, by_table[table], alerts))
        queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
        if queue not in by_queue:
            by_queue[queue] = SqsDeadLetters(
                clients.sqs, queue_url(clients, queue), settings.stream
            )
        letters[pipeline.name] = by_queue[queue]
    identity = stream_identity(clients, settings.stream)
    return EmbeddedRunner(
        clients.kinesis,
        stores,
        letters,
        pipelines,
        settings.stream,
        options,
        stream_identity=identity,
        finalize=(
            FinalizeSchedule(finalizers, (options or RunnerOptions()).finalize_interval)
            if finalize
            else None
        ),
    )
