"""Alerts to an SNS topic: PublishBatch, resending only the entries that failed.

Each alert is one message: the subject is :func:`~processors.alerts.alert_subject`, the
message the compact JSON of :func:`~processors.alerts.alert_body`, and the attributes
(pipeline, key, rule, severity) are String attributes that subscription filter policies
can match. On a FIFO topic (its name ends in ``.fifo``) the message group is the alert's
key, and the deduplication id its stable ``alert_id``, so SNS drops an alert sent again
within its five-minute deduplication interval (after a crash between sending and
recording, say). Resending only the failed entries of a batch can reorder a group's
alerts; alerts carry their window, so order is informative only.

SNS limits: at most 10 entries a call, 262,144 bytes per message and per call (body and
attributes), entry ids of at most 80 characters of ``[A-Za-z0-9_-]``, message group ids
of 1 to 128 characters of ASCII letters, digits and punctuation.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.alerts import (
    Alert,
    AlertDeliveryError,
    alert_attributes,
    alert_body,
    alert_subject,
)
from processors.sinks.sqs_dead_letters import sqs_json
from streams.aws_errors import ResourceMissing, describe, is_retryable
from streams.backoff import full_jitter

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sns.type_defs import PublishBatchRequestEntryTypeDef

BATCH = 10
"""PublishBatch: entries per call."""
MAX_BYTES = 262_144
"""One message, and one whole PublishBatch call: bodies and attributes, in bytes."""
ATTEMPTS = 8

__all__ = ["AlertDeliveryError", "SnsAlertSink", "message_group_id", "topic_arn_for"]

_GROUP_ID = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}")


def message_group_id(key: str) -> str:
    """``key`` itself when SNS takes it as a message group id, otherwise ``sha256:`` and the
    hex SHA-256 of its UTF-8 (a key that is too long, empty or not ASCII)."""
    if _GROUP_ID.fullmatch(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"


def entry_bytes(entry: PublishBatchRequestEntryTypeDef) -> int:
    """What one entry counts towards the limits: message, subject and attributes."""
    size = len(entry["Message"].encode("utf-8"))
    size += len(entry.get("Subject", "").encode("utf-8"))
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute.get("StringValue", "").encode("utf-8"))
    return size


def topic_arn_for(sns_client: SNSClient, topic_name: str) -> str:
    """The ARN of the topic named ``topic_name``, found by listing topics (which creates
    nothing). Raises ResourceMissing when there is none."""
    for page in sns_client.get_paginator("list_topics").paginate():
        for topic in page.get("Topics", []):
            arn = topic.get("TopicArn", "")
            if arn.rsplit(":", 1)[-1] == topic_name:
                return arn
    raise ResourceMissing(f"topic {topic_name} does not exist: run shardflow up")


class AlertTooLarge(ValueError):
    """An alert whose message cannot fit in SNS's limit, even without its values."""


class SnsAlertSink:
    """:class:`~processors.sinks.ports.AlertSink` on an SNS topic."""

    def __init__(
        self,
        sns_client: SNSClient,
        topic_arn: str,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = ATTEMPTS,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self._client = sns_client
        self._topic_arn = topic_arn
        self._fifo = topic_arn.endswith(".fifo")
        self._sleep = sleep
        self._attempts = attempts
        self._rng = rng

    def publish(self, alerts: Sequence[Alert]) -> list[tuple[Alert, str]]:
        """Deliver every alert, or raise :class:`AlertDeliveryError` (nothing of the
        failing call is known to be delivered). Returns the alerts SNS refused for good
        (the sender's fault, such as a message that cannot fit), with the reason."""
        rejected: list[tuple[Alert, str]] = []
        by_id: dict[str, Alert] = {}
        batch: list[PublishBatchRequestEntryTypeDef] = []
        size = 0
        for index, alert in enumerate(alerts):
            try:
                entry = self._entry(index, alert)
            except AlertTooLarge as exc:
                rejected.append((alert, str(exc)))
                continue
            by_id[entry["Id"]] = alert
            entry_size = entry_bytes(entry)
            if batch and (len(batch) == BATCH or size + entry_size > MAX_BYTES):
                rejected += [(by_id[i], why) for i, why in self._publish_batch(batch)]
                batch, size = [], 0
            batch.append(entry)
            size += entry_size
        if batch:
            rejected += [(by_id[i], why) for i, why in self._publish_batch(batch)]
        return rejected

    def _entry(self, index: int, alert: Alert) -> PublishBatchRequestEntryTypeDef:
        body: dict[str, Any] = alert_body(alert)
        entry: PublishBatchRequestEntryTypeDef = {
            "Id": str(index),
            "Subject": alert_subject(alert),
            "Message": sqs_json(body),
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in alert_attributes(alert).items()
            },
        }
        if self._fifo:
            entry["MessageGroupId"] = message_group_id(alert.key)
            entry["MessageDeduplicationId"] = alert.alert_id
        if entry_bytes(entry) > MAX_BYTES:
            # Only the other aggregates can be large (a long top-k list, say).
            body["values"] = {}
            body["values_truncated"] = True
            entry["Message"] = sqs_json(body)
            if entry_bytes(entry) > MAX_BYTES:
                raise AlertTooLarge(
                    f"alert {alert.alert_id} of {alert.pipeline} does not fit in an SNS "
                    f"message ({entry_bytes(entry)} bytes, at most {MAX_BYTES})"
                )
        return entry

    def _publish_batch(self, batch: list[PublishBatchRequestEntryTypeDef]) -> list[tuple[str, str]]:
        """Publish ``batch``, resending failed entries; returns the (entry id, reason) of
        entries refused as the sender's fault."""
        pending = batch
        refused: list[tuple[str, str]] = []
        for attempt in range(self._attempts):
            last = attempt == self._attempts - 1
            try:
                response = self._client.publish_batch(
                    TopicArn=self._topic_arn, PublishBatchRequestEntries=pending
                )
            except (ClientError, BotoCoreError) as exc:
                if not is_retryable(exc):
                    raise AlertDeliveryError(
                        f"SNS topic {self._topic_arn} refused alerts: {describe(exc)}"
                    ) from exc
                if last:
                    raise AlertDeliveryError(
                        f"{len(pending)} alerts could not be published to {self._topic_arn} "
                        f"after {self._attempts} attempts: {describe(exc)}"
                    ) from exc
                self._sleep(full_jitter(attempt, rng=self._rng))
                continue
            failed = response.get("Failed", [])
            refused += [
                (f["Id"], f"{f['Code']}: {f.get('Message', '')}")
                for f in failed
                if f.get("SenderFault")
            ]
            failed_ids = {f["Id"] for f in failed if not f.get("SenderFault")}
            pending = [entry for entry in pending if entry["Id"] in failed_ids]
            if not pending:
                return refused  # failures only for ids this call did not send
            if last:
                raise AlertDeliveryError(
                    f"{len(pending)} alerts could not be published to {self._topic_arn} "
                    f"after {self._attempts} attempts: "
                    + "; ".join(sorted({f["Code"] for f in failed}))
                )
            self._sleep(full_jitter(attempt, rng=self._rng))
        return refused  # not reached: the last attempt returns or raises
