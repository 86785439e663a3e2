"""AWS Lambda entry points: ``handler`` behind a Kinesis event source mapping (ESM), and
``finalize_handler`` on a schedule (final rows, alerts, and the shards' ends and idleness,
which Lambda never reports). deploy/lambda/template.yaml wires both.

Configuration, read once per container (``shardflow.settings.Settings.from_env``):
``SHARDFLOW_TABLE``, ``SHARDFLOW_DEAD_LETTER_QUEUE``, ``SHARDFLOW_ALERT_TOPIC`` (a name,
or a topic ARN: then no ``sns:ListTopics``), ``SHARDFLOW_STREAM`` (the stream the
finalizer looks after; the handler takes its stream from the event),
``SHARDFLOW_PIPELINES`` (comma-separated names; default: the pipelines of the stream, as
``shardflow run`` picks them), ``SHARDFLOW_LOG_LEVEL`` (INFO). Clients, stores and the
stream's identity (``DescribeStreamSummary``, the same string the embedded runner
records, so the runners can share a table) are built on first use and kept for the
container's life.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from processors.finalizer import Finalizer
from processors.pipeline import Pipeline
from processors.pipelines import PIPELINES, get_pipeline
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.ports import DeadLetterSink
from processors.sinks.sns_alerts import SnsAlertSink, topic_arn_for
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from processors.windowing.engine import DeadLetter
from shardflow.settings import Settings
from shardflow.wiring import default_pipelines, queue_url, stream_identity
from streams.clients import AwsClients, make_clients
from streams.lambda_event import parse_event
from streams.lambda_progress import DynamoShardClaims
from streams.lambda_runner import (
    BatchRunner,
    FinalizePass,
    FinalizeTarget,
    PipelineSinks,
    ShardLister,
)
from streams.shard_map import list_all_shards

log = logging.getLogger("shardflow.lambda")

PIPELINES_VARIABLE = "SHARDFLOW_PIPELINES"
LOG_LEVEL_VARIABLE = "SHARDFLOW_LOG_LEVEL"


class FinalizeFailed(RuntimeError):
    """A scheduled pass failed for some pipeline (the others were done)."""


def pipelines_for(settings: Settings, names: str | None) -> list[Pipeline[Any]]:
    """The pipelines named in ``names`` (comma-separated), or those of the stream."""
    if names and names.strip():
        return [get_pipeline(name.strip()) for name in names.split(",") if name.strip()]
    chosen = [PIPELINES[name] for name in default_pipelines(settings, list(PIPELINES.values()))]
    if not chosen:
        raise ValueError(f"no pipeline reads stream {settings.stream!r}: set {PIPELINES_VARIABLE}")
    return chosen


class _NoDeadLetters:
    """The finalizer's stand-in: it never applies records, so it never dead-letters."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        raise RuntimeError("the finalizer does not send dead letters")


_NO_DEAD_LETTERS = _NoDeadLetters()


@dataclass
class _Container:
    """What one Lambda container keeps between invocations."""

    settings: Settings
    pipeline_names: str | None
    clients: AwsClients
    runners: dict[str, BatchRunner] = field(default_factory=dict)
    finalize: FinalizePass | None = None
    _stores: dict[str, DynamoPartialStore] = field(default_factory=dict)
    _letters: dict[tuple[str, str], SqsDeadLetters] = field(default_factory=dict)

    def _lister(self, stream: str) -> ShardLister:
        kinesis = self.clients.kinesis
        return lambda: list_all_shards(kinesis, stream)

    def sinks(
        self, settings: Settings, pipelines: Sequence[Pipeline[Any]], letters: bool = True
    ) -> list[PipelineSinks]:
        """Each pipeline's store (one per table) and dead-letter queue (one per queue;
        without ``letters``, none: the finalizer sends none, and needs no SQS rights)."""
        found = []
        for pipeline in pipelines:
            table = settings.table_for(pipeline.sinks.results_table)
            if table not in self._stores:
                sharing = [
                    p for p in pipelines if settings.table_for(p.sinks.results_table) == table
                ]
                ttls = {p.name: p.result_ttl_s for p in sharing if p.result_ttl_s is not None}
                self._stores[table] = DynamoPartialStore(self.clients.dynamodb, table, ttls)
            dead_letters: DeadLetterSink = _NO_DEAD_LETTERS
            if letters:
                queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
                if (queue, settings.stream) not in self._letters:
                    self._letters[(queue, settings.stream)] = SqsDeadLetters(
                        self.clients.sqs, queue_url(self.clients, queue), settings.stream
                    )
                dead_letters = self._letters[(queue, settings.stream)]
            found.append(
                PipelineSinks(
                    pipeline,
                    self._stores[table],
                    dead_letters,
                    DynamoShardClaims(self.clients.dynamodb, table),
                )
            )
        return found

    def runner(self, stream: str) -> BatchRunner:
        """The batch runner of ``stream`` (built on its first batch)."""
        if stream not in self.runners:
            settings = replace(self.settings, stream=stream)
            pipelines = pipelines_for(settings, self.pipeline_names)
            self.runners[stream] = BatchRunner(
                stream_identity(self.clients, stream),
                self.sinks(settings, pipelines),
                self._lister(stream),
            )
            log.info("stream %s: running %s", stream, ", ".join(p.name for p in pipelines))
        return self.runners[stream]

    def finalize_pass(self) -> FinalizePass:
        if self.finalize is None:
            settings = self.settings
            stream = settings.stream
            pipelines = pipelines_for(settings, self.pipeline_names)
            targets = []
            for sinks in self.sinks(settings, pipelines, letters=False):
                pipeline = sinks.pipeline
                alerts = None
                if pipeline.sinks.alerts:
                    topic = settings.alert_topic_for(pipeline.sinks.alert_topic)
                    arn = (
                        topic
                        if topic.startswith("arn:")
                        else topic_arn_for(self.clients.sns, topic)
                    )
                    alerts = SnsAlertSink(self.clients.sns, arn)
                assert isinstance(sinks.store, DynamoPartialStore)
                assert isinstance(sinks.claims, DynamoShardClaims)
                targets.append(
                    FinalizeTarget(sinks, sinks.claims, Finalizer(pipeline, sinks.store, alerts))
                )
            self.finalize = FinalizePass(
                self.clients.kinesis,
                stream,
                stream_identity(self.clients, stream),
                targets,
                self._lister(stream),
            )
        return self.finalize


_CONTAINER: _Container | None = None


def _container() -> _Container:
    global _CONTAINER  # noqa: PLW0603 (built once per Lambda container, on first use)
    if _CONTAINER is None:
        env: Mapping[str, str] = os.environ
        logging.getLogger("shardflow").setLevel(env.get(LOG_LEVEL_VARIABLE) or "INFO")
        settings = Settings.from_env(env)
        _CONTAINER = _Container(settings, env.get(PIPELINES_VARIABLE), make_clients(settings))
    return _CONTAINER


def reset() -> None:
    """Forget the container's settings and clients (tests change the environment)."""
    global _CONTAINER  # noqa: PLW0603
    _CONTAINER = None


def handler(event: Mapping[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """One ESM batch: every pipeline applies it and makes it durable. Returns a partial
    batch response: empty on success, else the sequence number of the first record not
    durable for every pipeline, so Lambda retries from there (``ReportBatchItemFailures``
    must be on; without it Lambda would count the batch as processed)."""
    batch = parse_event(event)
    if batch is None:
        return {"batchItemFailures": []}
    token = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
    outcome = _container().runner(batch.stream).run(batch, token)
    log.info(
        "shard %s: %d records, %d row writes, %d dead letters%s",
        batch.shard_id,
        outcome.records,
        outcome.rows_written,
        outcome.dead_letters,
        f", retry from {outcome.retry_from}" if outcome.retry_from else "",
    )
    return outcome.response()


def finalize_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """One scheduled pass over ``SHARDFLOW_STREAM``'s pipelines: register new shards,
    record ended and quiet ones, write final rows and send alerts. Raises (the
    invocation fails, and shows in the function's Errors metric) if any pipeline
    failed; the others were done."""
    outcome = _container().finalize_pass().run()
    summary = outcome.summary()
    log.info("finalize pass: %s", summary)
    if outcome.errors:
        raise FinalizeFailed(
            "; ".join(f"{name}: {error}" for name, error in outcome.errors.items())
        )
    return summary
