"""``shardflow dead-letters --redrive``: invalid events back through their pipeline, after a
schema or pipeline fix, none lost and each counted once.

A run receives the queue's messages (:mod:`shardflow.redrive_queue`: each examined once,
what it keeps held as long as it lasts, the run bounded by what the queue held when it
started) and, for each letter of the pipeline and reason,
(:mod:`shardflow.redrive_letters`):

1. decodes its original bytes with the pipeline as it is *now*, with the checks the engine
   makes: still invalid, or cut in the body (``data_truncated``), it stays;
2. leaves it when every window of its event is already final on the shard it would land
   on (:mod:`shardflow.redrive_target`): put back, it would come back as a ``late`` letter.
   Redrive recovers events whose windows are still open; final windows never change;
3. claims it in the ledger (``sending``), puts it into the stream in an envelope that only
   this pipeline reads, carrying its dead letter id
   (:mod:`processors.windowing.redrive_envelope`), with its original partition key; once
   Kinesis took it, the ledger marks it ``sent`` and the message is deleted.

A letter whose put had no clear outcome (a failure, a timeout, a crash) keeps its claim at
``sending`` and stays in the queue; the next run puts it again, and the pipeline counts
one copy of each dead letter id, wherever the stream holds it. A letter the ledger has as
``sent`` is only deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from processors.pipeline import Pipeline
from processors.windowing.engine import REASON_INVALID, REASON_LATE
from shardflow.redrive_ledger import RedriveLedger
from shardflow.redrive_letters import Letter, LetterHandler, Producer
from shardflow.redrive_queue import RunQueue
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import Placement, Placements, PlacementUnavailable

log = logging.getLogger("shardflow.redrive")

QUIET_RECEIVES = 3
"""The run ends after this many receives in a row bring no message it has not seen (all
but the first long-polling)."""
MARGIN = 100
"""A run examines at most the messages the queue held when it started, plus a tenth of
them, plus this many: a queue that fills as fast as it is emptied does not keep it going."""


class RedriveRefused(ValueError):
    """A redrive that cannot do what it is asked (late letters, a FIFO queue)."""


def check_reason(reason: str) -> None:
    """Only invalid letters are redriven; raises :class:`RedriveRefused` for others."""
    if reason == REASON_LATE:
        raise RedriveRefused(
            "late letters are not redriven: their windows had closed on their shard, whose "
            "watermark never goes back (final windows never change), so they would come "
            "straight back as late. They stay in the queue "
            "(`shardflow dead-letters --reason late` lists them)"
        )
    if reason != REASON_INVALID:
        raise RedriveRefused(f"unknown reason {reason!r}: only invalid letters are redriven")


def check_queue(queue_url: str) -> None:
    """FIFO queues are refused: redrive gives messages back one by one while it holds
    others, and a FIFO queue holds back a whole message group while one of its messages
    is in flight."""
    if queue_url.rstrip("/").endswith(".fifo"):
        raise RedriveRefused(
            f"{queue_url.rstrip('/').rsplit('/', 1)[-1]} is a FIFO queue: FIFO dead-letter "
            "queues are not supported (shardflow sends dead letters to a standard queue)"
        )


def _parse(body: str) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("dead_letter_id"), str):
        return None
    return parsed


def redrive(
    sqs: Any,
    queue_url: str,
    pipeline: Pipeline[Any],
    producer: Producer,
    ledger: RedriveLedger,
    placement: Callable[[], Placement],
    *,
    reason: str = REASON_INVALID,
    limit: int | None = None,
    progress: Callable[[RedriveReport], None] | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    clock: Callable[[], float] = time.monotonic,
) -> RedriveReport:
    """Put ``pipeline``'s ``reason`` letters back into its stream (at most ``limit``).

    ``placement`` reads where records land and the pipeline's watermarks
    (:func:`shardflow.redrive_target.placement_loader`); when it fails at the start,
    :class:`PlacementUnavailable` is raised before the queue is touched. Raises
    :class:`RedriveRefused` for late letters and FIFO queues."""
    check_reason(reason)
    check_queue(queue_url)
    placements = Placements(placement, clock)
    queue = RunQueue(sqs, queue_url, clock)
    at_start = queue.depth()
    budget = at_start + at_start // 10 + MARGIN
    report = RedriveReport(pipeline.name, reason, pipeline.allowed_lateness_ms)
    handler = LetterHandler(pipeline, producer, ledger, queue, placements, report, clock_ms)
    outcomes: dict[str, bool] = {}
    """Letter id -> deleted in this run (True) or left (False)."""
    taken = 0
    quiet = 0
    try:
        while quiet < QUIET_RECEIVES:
            if limit is not None and taken >= limit:
                report.stopped = f"stopped at --limit {limit}: more letters may be waiting"
                break
            if len(queue.seen) >= budget:
                report.stopped = (
                    f"stopped after {len(queue.seen)} messages (the queue held about "
                    f"{at_start} when the run started): it fills as the run goes"
                )
                break
            try:
                placements.current()
            except PlacementUnavailable as exc:
                report.stopped = f"stopped: {exc} (cannot tell which windows are final)"
                break
            queue.keep_alive()
            messages = queue.receive(wait=quiet > 0)
            if not messages:
                quiet += 1
                continue
            quiet = 0
            batch: dict[str, Letter] = {}
            give_back = []
            for message in messages:
                body = _parse(message.body)
                if body is None or (body.get("pipeline"), body.get("reason")) != (
                    pipeline.name,
                    reason,
                ):
                    report.skipped += 1
                    give_back.append(message.message_id)
                    continue
                letter_id = str(body["dead_letter_id"])
                if letter_id in batch:
                    batch[letter_id].copies.append(message.message_id)
                elif letter_id in outcomes:  # another copy of a letter this run handled
                    if not outcomes[letter_id]:
                        report.copies_left += 1  # held like the first
                    elif queue.delete(message.message_id):
                        report.duplicates += 1
                    else:
                        report.not_deleted += 1
                elif limit is not None and taken >= limit:
                    give_back.append(message.message_id)
                else:
                    taken += 1
                    batch[letter_id] = Letter(body, [message.message_id])
            queue.give_back(give_back)
            if batch:
                outcomes.update(handler.handle(list(batch.values())))
                if progress is not None:
                    progress(report)
    finally:
        queue.give_back_all()
    report.examined = len(queue.seen)
    try:
        report.unexamined = max(0, queue.depth() - queue.still_there)
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not read the queue's depth: %s", exc)
    return report
