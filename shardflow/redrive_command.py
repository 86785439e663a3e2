"""The command-line side of ``shardflow dead-letters --redrive``: which pipeline, its queue,
stream and table, the producer and the ledger, and the summary."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from processors.pipeline import Pipeline
from processors.pipelines import get_pipeline
from processors.windowing.engine import REASON_INVALID
from shardflow.redrive import RedriveRefused, check_reason, redrive
from shardflow.redrive_ledger import DynamoRedriveLedger
from shardflow.redrive_report import RedriveReport
from shardflow.settings import Settings
from shardflow.wiring import check_table, default_pipelines, queue_url

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
    resend_uncertain: bool = False,
) -> int:
    """Redrive ``pipeline``'s letters from its queue into its stream; print the summary.
    0 when every eligible letter was handled, 1 when some are left, 2 when refused."""
    from streams.kinesis_producer import KinesisProducer, ProducerConfig  # noqa: PLC0415

    queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
    stream = settings.stream_for(pipeline.source)
    table = settings.table_for(pipeline.sinks.results_table)
    try:
        check_reason(reason)
    except RedriveRefused as exc:
        print(f"shardflow dead-letters: {exc}", file=sys.stderr)
        return 2
    url = queue_url(clients, queue)
    check_table(clients, table)
    ledger = DynamoRedriveLedger(clients.dynamodb, table, pipeline.name)
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
    with KinesisProducer(clients.kinesis, stream, config) as producer:
        report = redrive(
            clients.sqs,
            url,
            pipeline,
            producer,
            ledger,
            reason=reason,
            limit=limit,
            resend_uncertain=resend_uncertain,
            progress=progress,
        )
    if interactive:
        print(file=sys.stderr)
    for line in report.lines():
        print(line)
    return 1 if report.left or report.not_deleted else 0
