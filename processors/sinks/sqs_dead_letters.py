"""Dead letters to an SQS queue: SendMessageBatch, resending only the entries that failed.

SQS limits, all in UTF-8 bytes: a message (body plus its attributes' names, data types and
values) and a whole SendMessageBatch request are at most 262,144 bytes. Bodies and
attribute values may only hold #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
#x10000-#x10FFFF; anything else makes SQS reject the message as the sender's fault, which
would stop the shard for good. So every body and attribute value is made valid here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from processors.sinks.dead_letters import (
    MAX_BODY_BYTES,
    dead_letter_body,
    dead_letter_id,
    shrink_to_fit,
)
from processors.windowing.engine import DeadLetter

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

_BATCH = 10
_BATCH_BYTES = MAX_BODY_BYTES
"""SendMessageBatch: the sizes of all its messages together, in bytes."""
_MESSAGE_BYTES = MAX_BODY_BYTES
"""One message: its body and its attributes, in bytes."""
_ATTEMPTS = 8

_NOT_FOR_SQS = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character outside the set SQS accepts in bodies and attribute values."""


def sqs_json(body: Mapping[str, Any]) -> str:
    """``body`` as JSON text SQS accepts, equal as JSON to ``orjson.dumps(body)``.

    orjson escapes control characters but writes U+FFFE and U+FFFF raw; those become
    ``\\uXXXX`` escapes (they can only occur inside JSON strings, where the escape means
    the same character). A string with a lone surrogate, which orjson refuses, falls back
    to the standard library's ASCII-only JSON, escapes included.
    """
    try:
        text = orjson.dumps(body).decode("utf-8")
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"))
    return _NOT_FOR_SQS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def sqs_text(value: str) -> str:
    """An attribute value SQS accepts: characters outside its set become U+FFFD."""
    return _NOT_FOR_SQS.sub("\ufffd", value)


def message_bytes(entry: SendMessageBatchRequestEntryTypeDef) -> int:
    """What SQS counts for one message: body, and each attribute's name, type and value."""
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute.get("StringValue", "").encode("utf-8"))
    return size


class DeadLetterDeliveryError(Exception):
    """Dead letters SQS would not take after every retry; the shard does not checkpoint."""


class SqsDeadLetters:
    """:class:`~processors.sinks.ports.DeadLetterSink` on an SQS queue."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        stream: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._stream = stream
        self._sleep = sleep

    def send(self, letters: Sequence[DeadLetter]) -> None:
        entries = [self._entry(index, letter) for index, letter in enumerate(letters)]
        batch: list[SendMessageBatchRequestEntryTypeDef] = []
        size = 0
        for entry in entries:
            entry_size = message_bytes(entry)
            if batch and (len(batch) == _BATCH or size + entry_size > _BATCH_BYTES):
                self._send_batch(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            self._send_batch(batch)

    def _entry(self, index: int, letter: DeadLetter) -> SendMessageBatchRequestEntryTypeDef:
        body = dead_letter_body(letter, self._stream)
        entry: SendMessageBatchRequestEntryTypeDef = {
            "Id": str(index),
            "MessageBody": sqs_json(body),
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": sqs_text(value)}
                for name, value in (
                    ("reason", letter.reason),
                    ("pipeline", letter.pipeline),
                    ("dead_letter_id", dead_letter_id(letter)),
                )
            },
        }
        size = message_bytes(entry)
        if size > _MESSAGE_BYTES:
            # shrink_to_fit cuts the data by the excess (and some room): pass the size of
            # the whole message, so the attributes are made room for too.
            entry["MessageBody"] = sqs_json(shrink_to_fit(body, size))
        return entry

    def _send_batch(self, batch: list[SendMessageBatchRequestEntryTypeDef]) -> None:
        pending = batch
        for attempt in range(_ATTEMPTS):
            response = self._client.send_message_batch(QueueUrl=self._queue_url, Entries=pending)
            failed = response.get("Failed", [])
            if not failed:
                return
            failed_ids = {failure["Id"] for failure in failed}
            permanent = [f for f in failed if f.get("SenderFault")]
            if permanent:
                raise DeadLetterDeliveryError(
                    "the dead-letter queue rejected messages: "
                    + "; ".join(f"{f['Code']}: {f.get('Message', '')}" for f in permanent)
                )
            pending = [entry for entry in pending if entry["Id"] in failed_ids]
            self._sleep(min(5.0, 0.1 * 2**attempt))
        raise DeadLetterDeliveryError(
            f"{len(pending)} dead letters could not be delivered after {_ATTEMPTS} attempts"
        )
