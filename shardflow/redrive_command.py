"""The command-line side of ``shardflow dead-letters --redrive``: which pipeline, its queue,
stream and table, the producer and the ledger, and the summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from processors.pipeline import Pipeline
from processors.pipelines import get_pipeline
from processors.windowing.engine import REASON_INVALID
from shardflow.redrive import RedriveRefused, check_queue, check_reason, redrive
from shardflow.redrive_ledger import DynamoRedriveLedger
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import PlacementUnavailable, placement_loader
from shardflow.settings import Settings
from shardflow.wiring import default_pipelines, make_store, queue_url

if TYPE_CHECKING:
    from streams.clients import AwsClients

REDRIVE_LINGER_MS = 10.0
"""Each receive's letters are waited for before the next receive: little point lingering."""


class NoPipeline(ValueError):
    """``--pipeline`` is needed: no pipeline, or several, use the queue."""


def choose_pipeline(
    settings: Settings, pipelines: Sequence[Pipeline[Any]], name: str | None
) -> Pipeline[Any]:
    """``name``'s pipeline; without a name, the one pipeline whose dead letters go to the
    configured queue (among several, the one ``shardflow run`` runs by default)."""
    if name is not None:
        return get_pipeline(name)
    queue = settings.dead_letter_queue
    users = [
        p for p in pipelines if settings.dead_letter_queue_for(p.sinks.dead_letter_queue) == queue
    ]
    if len(users) > 1:
        defaults = set(default_pipelines(settings, pipelines))
        narrowed = [p for p in users if p.name in defaults]
        users = narrowed or users
    if len(users) == 1:
        return users[0]
    if not users:
        raise NoPipeline(f"no pipeline sends its dead letters to {queue}: name one with --pipeline")
    raise NoPipeline(
        f"{', '.join(p.name for p in users)} all send dead letters to {queue}: "
        "name one with --pipeline"
    )


def run_redrive(
    clients: AwsClients,
    settings: Settings,
    pipeline: Pipeline[Any],
    *,
    reason: str = REASON_INVALID,
    limit: int | None = None,
) -> int:
    """Redrive ``pipeline``'s letters from its queue into its stream; print the summary.
    0 when every eligible letter was handled, 1 when some are (or may be) left, 2 when
    refused or unable to start (nothing touched)."""
    from streams.kinesis_producer import KinesisProducer, ProducerConfig  # noqa: PLC0415

    queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
    stream = settings.stream_for(pipeline.source)
    table = settings.table_for(pipeline.sinks.results_table)
    try:
        check_reason(reason)
        check_queue(queue)
    except RedriveRefused as exc:
        print(f"shardflow dead-letters: {exc}", file=sys.stderr)
        return 2
    url = queue_url(clients, queue)
    store = make_store(clients, settings, pipeline)
    ledger = DynamoRedriveLedger(clients.dynamodb, table, pipeline.name)
    placement = placement_loader(clients.kinesis, stream, store, pipeline)
    interactive = sys.stderr.isatty()

    def progress(report: RedriveReport) -> None:
        if interactive:
            print(
                f"\r{report.sent} sent, {report.left} left, {report.skipped} other",
                end="",
                file=sys.stderr,
            )

    print(
        f"redriving {pipeline.name}'s {reason} letters from {queue} into {stream}",
        file=sys.stderr,
    )
    config = ProducerConfig(linger_ms=REDRIVE_LINGER_MS)
    try:
        with KinesisProducer(clients.kinesis, stream, config) as producer:
            report = redrive(
                clients.sqs,
                url,
                pipeline,
                producer,
                ledger,
                placement,
                reason=reason,
                limit=limit,
                progress=progress,
            )
    except RedriveRefused as exc:
        print(f"shardflow dead-letters: {exc}", file=sys.stderr)
        return 2
    except PlacementUnavailable as exc:
        print(
            f"shardflow dead-letters: {exc}: redrive needs it to leave the letters whose "
            "windows are already final; nothing was touched",
            file=sys.stderr,
        )
        return 2
    if interactive:
        print(file=sys.stderr)
    for line in report.lines():
        print(line)
    return report.exit_code
