"""``shardflow dead-letters``: what is in the dead-letter queue, readable, without
removing anything.

SQS has no peek: the listing receives messages, holding them hidden for a short time,
and makes them visible again when it ends (:func:`list_dead_letters`). It stops at
``limit`` letters, or when a few receives in a row (the last ones long-polling, so that
SQS asks all its servers) bring nothing new; the summary line says how many the queue
reports.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from schemas.timestamps import format_iso8601

_QUIET_RECEIVES = 3

log = logging.getLogger("shardflow.dead_letters")


@dataclass(frozen=True)
class Letter:
    """One dead letter as the queue holds it."""

    message_id: str
    body: dict[str, Any]

    @property
    def payload(self) -> str:
        """The original record, as text when it is UTF-8 (else base64, marked)."""
        try:
            data = base64.b64decode(self.body.get("data", ""), validate=True)
        except (binascii.Error, ValueError):
            return "(data is not base64)"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + str(self.body.get("data", ""))
        return text + (" (cut)" if self.body.get("data_truncated") else "")


HOLD_S = 60
"""How long listed messages stay hidden from other readers at most: they are made visible
again as soon as the listing ends."""


def _release(sqs: Any, queue_url: str, handles: list[str]) -> None:
    """Make held messages visible again at once (ChangeMessageVisibilityBatch, 10 a call).
    A handle SQS no longer knows (the hold ran out) is already visible: nothing to do."""
    for offset in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(handles[offset : offset + 10])
        ]
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not make %d listed messages visible again at once (%s): they will "
                "be within %d s",
                len(entries),
                exc,
                HOLD_S,
            )


def _not_a_letter(text: str) -> dict[str, Any]:
    return {"reason": "?", "error": "not a shardflow dead letter", "raw": text}


def list_dead_letters(
    sqs: Any, queue_url: str, reason: str | None = None, limit: int = 100
) -> list[Letter]:
    """Up to ``limit`` letters (of ``reason``, if given), in the order SQS hands them out.

    SQS has no peek: a receive hides the messages it returns. So the listing holds what it
    has received (for at most :data:`HOLD_S` seconds) until it has seen enough, or a few
    receives in a row bring nothing; then it makes every held message visible again. Other
    readers (a redrive) do not get those messages during the listing; nothing is removed.
    """
    out: list[Letter] = []
    held: list[str] = []
    seen: set[str] = set()
    quiet = 0
    try:
        while quiet < _QUIET_RECEIVES and len(out) < limit:
            response = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=HOLD_S,
                WaitTimeSeconds=1 if quiet else 0,
            )
            messages = response.get("Messages", [])
            held.extend(message["ReceiptHandle"] for message in messages)
            new = [m for m in messages if m["MessageId"] not in seen]
            quiet = 0 if new else quiet + 1
            for message in new:
                seen.add(message["MessageId"])
                try:
                    body = orjson.loads(message["Body"])
                except orjson.JSONDecodeError:
                    body = _not_a_letter(message["Body"])
                if not isinstance(body, dict):
                    body = _not_a_letter(message["Body"])
                if reason is not None and body.get("reason") != reason:
                    continue
                if len(out) < limit:
                    out.append(Letter(message["MessageId"], body))
    finally:
        _release(sqs, queue_url, held)
    return out


def queue_depth(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0))


def render_letters(letters: list[Letter], fmt: str) -> str:
    """``json``: one array of the bodies, each with its decoded ``payload``; ``table``: one
    block per letter, for people."""
    if fmt == "json":
        return orjson.dumps(
            [{**letter.body, "payload": letter.payload} for letter in letters],
            option=orjson.OPT_INDENT_2,
        ).decode()
    if not letters:
        return "(no dead letters)"
    blocks = []
    for letter in letters:
        body = letter.body
        arrival = body.get("approximate_arrival_ms")
        lines = [
            f"{body.get('reason', '?'):<8} {body.get('dead_letter_id', letter.message_id)}",
            f"  error     {body.get('error', '')}",
            f"  shard     {body.get('shard_id', '?')}  sequence {body.get('sequence_number', '?')}"
            f"  sub {body.get('sub_sequence_number', 0)}",
        ]
        if isinstance(arrival, int):
            lines.append(f"  arrived   {format_iso8601(arrival)}")
        lines.append(f"  payload   {letter.payload}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
