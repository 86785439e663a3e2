"""``shardflow dead-letters``: what is in the dead-letter queue, readable, without
removing anything.

SQS has no peek: messages are received with a visibility timeout of 0, so they stay
visible to every other reader, and told apart by message id (the same message may come
back in several receives). Listing stops at ``limit`` letters, or when a few receives in a
row bring nothing new: SQS samples its servers, so a listing of a large queue may not be
complete; the summary line says how many the queue reports.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.timestamps import format_iso8601

_QUIET_RECEIVES = 3


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


def _bodies(sqs: Any, queue_url: str) -> Iterator[Letter]:
    seen: set[str] = set()
    quiet = 0
    while quiet < _QUIET_RECEIVES:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        )
        new = 0
        for message in response.get("Messages", []):
            if message["MessageId"] in seen:
                continue
            seen.add(message["MessageId"])
            new += 1
            try:
                body = orjson.loads(message["Body"])
            except orjson.JSONDecodeError:
                body = {
                    "reason": "?",
                    "error": "not a shardflow dead letter",
                    "raw": message["Body"],
                }
            if not isinstance(body, dict):
                body = {
                    "reason": "?",
                    "error": "not a shardflow dead letter",
                    "raw": message["Body"],
                }
            yield Letter(message["MessageId"], body)
        quiet = 0 if new else quiet + 1


def list_dead_letters(
    sqs: Any, queue_url: str, reason: str | None = None, limit: int = 100
) -> list[Letter]:
    """Up to ``limit`` letters (of ``reason``, if given), oldest receives first."""
    out: list[Letter] = []
    for letter in _bodies(sqs, queue_url):
        if reason is not None and letter.body.get("reason") != reason:
            continue
        out.append(letter)
        if len(out) >= limit:
            break
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
