"""``shardflow dead-letters --redrive``: invalid events back through their pipeline, after a
schema or pipeline fix, none lost and none put twice.

For each letter of the pipeline (and reason) in the queue:

1. it is received with a visibility timeout (:data:`VISIBILITY_S`), so no other redrive
   takes it meanwhile; letters of other pipelines or reasons are held the same way and
   made visible again, untouched, when the run ends (so a run sees each message once);
2. its original bytes are decoded with the pipeline as it is *now*, with the checks the
   engine makes: still invalid, or cut in the body (``data_truncated``), it stays;
3. the ledger claims it (``sending``), it is put into the stream in an envelope that only
   this pipeline reads (:mod:`processors.windowing.redrive_envelope`), with its original
   partition key; once Kinesis took it the ledger marks it ``sent`` and the message is
   deleted. A failed put releases the claim and leaves the message.

After a crash, a letter the ledger has as ``sent`` is only deleted; one left at ``sending``
may or may not be in the stream and is left alone ("uncertain") unless
``resend_uncertain``. A redriven event whose window has already closed on its shard comes
back as a ``late`` dead letter: a shard's watermark never goes back, and final windows
never change.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from processors.pipeline import Pipeline
from processors.windowing.engine import REASON_INVALID, REASON_LATE, checked_event
from processors.windowing.redrive_envelope import wrap
from schemas.errors import InvalidEvent
from shardflow.redrive_ledger import NEW, SENT, RedriveLedger
from shardflow.redrive_report import RedriveReport
from streams.producer_api import BufferFull, ProduceFailed, PutResult, RecordRejected

log = logging.getLogger("shardflow.redrive")

VISIBILITY_S = 300
"""How long a received message stays invisible to other readers while this run holds it."""
WAIT_S = 1
"""Long polling: SQS asks all its servers, so an empty answer means an empty queue."""
QUIET_RECEIVES = 2
"""The run ends after this many receives in a row bring nothing new."""
PUT_TIMEOUT_S = 120.0
"""A put with no outcome by then is left as uncertain (the producer gives up after 30 s)."""


class RedriveRefused(ValueError):
    """A redrive that cannot do what it is asked (late letters)."""


class Producer(Protocol):
    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]: ...


@dataclass
class _Letter:
    message_id: str
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["dead_letter_id"])


class _Queue:
    """Receives, deletes, and gives back (visible at once) what it holds at the end."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.url = queue_url
        self.held: dict[str, str] = {}
        """Message id -> latest receipt handle, for every message received, not deleted."""

    def receive(self) -> list[tuple[str, str]]:
        response = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=VISIBILITY_S,
            WaitTimeSeconds=WAIT_S,
        )
        out = []
        for message in response.get("Messages", []):
            self.held[message["MessageId"]] = message["ReceiptHandle"]
            out.append((message["MessageId"], message["Body"]))
        return out

    def delete(self, message_id: str) -> bool:
        try:
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=self.held[message_id])
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete message %s: %s", message_id, exc)
            return False
        del self.held[message_id]
        return True

    def release_all(self) -> None:
        entries = [
            {"Id": str(n), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
            for n, receipt in enumerate(self.held.values())
        ]
        for start in range(0, len(entries), 10):
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.url, Entries=entries[start : start + 10]
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("messages stay invisible for up to %ss: %s", VISIBILITY_S, exc)
                continue
            for failure in response.get("Failed", []):
                log.warning("a message stays invisible for up to %ss: %s", VISIBILITY_S, failure)
        self.held.clear()


def _parse(body: str) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("dead_letter_id"), str):
        return None
    return parsed


def _partition_key(letter: _Letter) -> str:
    key = letter.body.get("partition_key")
    return key if isinstance(key, str) and 1 <= len(key) <= 256 else letter.id[:256]


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


def redrive(
    sqs: Any,
    queue_url: str,
    pipeline: Pipeline[Any],
    producer: Producer,
    ledger: RedriveLedger,
    *,
    reason: str = REASON_INVALID,
    limit: int | None = None,
    resend_uncertain: bool = False,
    progress: Callable[[RedriveReport], None] | None = None,
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> RedriveReport:
    """Put ``pipeline``'s ``reason`` letters back into its stream (at most ``limit``)."""
    check_reason(reason)
    report = RedriveReport(pipeline.name, reason)
    queue = _Queue(sqs, queue_url)
    seen: set[str] = set()
    taken = 0
    quiet = 0
    try:
        while quiet < QUIET_RECEIVES and (limit is None or taken < limit):
            batch: list[_Letter] = []
            new = 0
            for message_id, text in queue.receive():
                if message_id in seen:
                    continue  # held past its visibility timeout and received again
                seen.add(message_id)
                new += 1
                body = _parse(text)
                if body is None or (body.get("pipeline"), body.get("reason")) != (
                    pipeline.name,
                    reason,
                ):
                    report.skipped += 1
                elif limit is None or taken < limit:
                    taken += 1
                    batch.append(_Letter(message_id, body))
                # else: past the limit, given back untouched
            quiet = 0 if new else quiet + 1
            if batch:
                _handle(
                    batch, pipeline, producer, ledger, queue, report, resend_uncertain, clock_ms
                )
                if progress is not None:
                    progress(report)
    finally:
        queue.release_all()
    return report


def _handle(
    batch: Sequence[_Letter],
    pipeline: Pipeline[Any],
    producer: Producer,
    ledger: RedriveLedger,
    queue: _Queue,
    report: RedriveReport,
    resend_uncertain: bool,
    clock_ms: Callable[[], int],
) -> None:
    """One receive's letters: check, claim, put, then mark and delete."""
    by_id: dict[str, list[_Letter]] = {}
    for letter in batch:
        by_id.setdefault(letter.id, []).append(letter)
    pending: list[tuple[str, Future[PutResult]]] = []
    for letter_id, copies in by_id.items():
        letter = copies[0]
        if letter.body.get("data_truncated"):
            report.cut.append(letter_id)
            continue
        try:
            data = base64.b64decode(str(letter.body.get("data", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            report.still_invalid.append((letter_id, f"the letter's data is not base64: {exc}"))
            continue
        try:
            # The record arrives again now: the engine's future-time check runs from now.
            checked_event(pipeline, data, clock_ms())
        except InvalidEvent as exc:
            report.still_invalid.append((letter_id, str(exc)))
            continue
        state = ledger.claim(letter_id)
        if state == SENT:
            _delete(copies, queue, report)
            report.already_sent += 1
            continue
        if state != NEW and not resend_uncertain:  # SENDING: it may be in the stream
            report.uncertain.append(letter_id)
            continue
        try:
            future = _put(producer, wrap(pipeline.name, letter_id, data), _partition_key(letter))
        except RecordRejected as exc:
            ledger.release(letter_id)
            report.failed.append((letter_id, str(exc)))
            continue
        except Exception:
            ledger.release(letter_id)  # the producer did not take it (closed, say)
            raise
        pending.append((letter_id, future))
    deadline = time.monotonic() + PUT_TIMEOUT_S
    for letter_id, future in pending:
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except ProduceFailed as exc:
            ledger.release(letter_id)
            report.failed.append((letter_id, exc.reason))
            continue
        except TimeoutError:
            report.uncertain.append(letter_id)  # the claim stays: it may yet be put
            continue
        ledger.mark_sent(letter_id, result.shard_id, result.sequence_number)
        report.sent += 1
        _delete(by_id[letter_id], queue, report)


def _put(producer: Producer, data: bytes, partition_key: str) -> Future[PutResult]:
    while True:
        try:
            return producer.put(data, partition_key, block=False)
        except BufferFull as full:
            time.sleep(full.retry_after)


def _delete(copies: Sequence[_Letter], queue: _Queue, report: RedriveReport) -> None:
    for copy in copies:
        if not queue.delete(copy.message_id):
            report.not_deleted += 1
    report.duplicates += len(copies) - 1
