"""Dead letters to an SQS queue: SendMessageBatch, resending only the entries that failed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

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
_ATTEMPTS = 8


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
            entry_size = len(entry["MessageBody"])
            if batch and (len(batch) == _BATCH or size + entry_size > _BATCH_BYTES):
                self._send_batch(batch)
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            self._send_batch(batch)

    def _entry(self, index: int, letter: DeadLetter) -> SendMessageBatchRequestEntryTypeDef:
        body = dead_letter_body(letter, self._stream)
        encoded = orjson.dumps(body)
        if len(encoded) > MAX_BODY_BYTES:
            encoded = orjson.dumps(shrink_to_fit(body, len(encoded)))
        return {
            "Id": str(index),
            "MessageBody": encoded.decode("utf-8"),
            "MessageAttributes": {
                "reason": {"DataType": "String", "StringValue": letter.reason},
                "pipeline": {"DataType": "String", "StringValue": letter.pipeline},
                "dead_letter_id": {"DataType": "String", "StringValue": dead_letter_id(letter)},
            },
        }

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
