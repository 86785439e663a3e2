"""What the Lambda runner adds to a shard's progress item, so that a scheduled function can
mark shards idle (or ended) without racing the invocations that apply their records.

The embedded runner marks a shard idle in the same thread that reads it, so nothing can be
applied in between. Under Lambda the marker (``finalize_handler``) and the invocations run
apart, so each side leaves a trace the other checks, in one conditional write each:

- an invocation, before it applies any record, *touches* the shard's progress item:
  ``lambda_touch`` (a token of its own) and ``touched_ms``, on condition that the shard is
  registered for this stream and **not idle**. If the condition fails, the shard is idle
  (or new): the invocation wakes it first (:func:`streams.shard_work.wake`) and touches
  again;
- the marker reads the item, checks the stream (nothing after the checkpoint, at the tip),
  and writes its mark on condition that the checkpoint and the touch token are **what it
  read**.

An invocation that touched before the marker read has records after the checkpoint in the
stream until it flushes (so the marker finds the shard not at its tip), or has flushed
(so the checkpoint changed); one that touched after the read changed the token; one that
touches after the mark finds the shard idle and wakes it. Either way no record is applied
to a shard while it is marked idle, as with the embedded runner. ``quiet_since_ms`` is when
the marker first found the shard at its tip without knowing when its last record arrived
(a shard that never had one); a touch removes it. A progress write (``PutItem``) drops all
three, which is right: the shard just made progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from processors.sinks.dynamodb_store import progress_from_item, progress_pk
from processors.sinks.ports import StreamMismatch
from processors.windowing.engine import ShardProgress
from streams.aws_errors import is_conditional_failure

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class ShardClaims(Protocol):
    """The handler's side: touch a shard before applying its records."""

    def touch(
        self, pipeline: str, stream: str, shard_id: str, token: str, now_ms: int
    ) -> ShardProgress | None:
        """Touch the shard's progress and return it, or None when it is not registered
        for ``stream``, or is idle (nothing written then)."""
        ...

    def get(self, pipeline: str, stream: str, shard_id: str) -> ShardProgress | None:
        """The shard's progress (strongly consistent), None if it is not registered.
        Raises :class:`StreamMismatch` if it is registered for another stream."""
        ...


@dataclass(frozen=True)
class Observed:
    """One shard's progress as the marker read it, with the Lambda runner's attributes."""

    progress: ShardProgress
    stream: str | None
    touch: str | None
    touched_ms: int | None
    quiet_since_ms: int | None


def _int(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value else None


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


class DynamoShardClaims:
    """Touches and marks on the progress items of a DynamoDB results table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def _key(self, pipeline: str, shard_id: str) -> dict[str, Any]:
        return {"pk": {"S": progress_pk(pipeline)}, "sk": {"S": shard_id}}

    # -- the handler's side ------------------------------------------------------------

    def touch(
        self, pipeline: str, stream: str, shard_id: str, token: str, now_ms: int
    ) -> ShardProgress | None:
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(pipeline, shard_id),
                UpdateExpression="SET lambda_touch = :t, touched_ms = :now REMOVE quiet_since_ms",
                ConditionExpression=(
                    "attribute_exists(pk) AND #stream = :stream "
                    "AND attribute_not_exists(idle_since_ms)"
                ),
                ExpressionAttributeNames={"#stream": "stream"},
                ExpressionAttributeValues={
                    ":t": {"S": token},
                    ":now": {"N": str(now_ms)},
                    ":stream": {"S": stream},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return None
            raise
        return progress_from_item(response["Attributes"])

    def get(self, pipeline: str, stream: str, shard_id: str) -> ShardProgress | None:
        item = self._client.get_item(
            TableName=self._table, Key=self._key(pipeline, shard_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        stored = _text(item, "stream")
        if stored is not None and stored != stream:
            raise StreamMismatch(pipeline, stored, stream)
        return progress_from_item(item)

    # -- the marker's side ------------------------------------------------------------

    def observe(self, pipeline: str) -> list[Observed]:
        """Every registered shard of ``pipeline`` (strongly consistent)."""
        paginator = self._client.get_paginator("query")
        observed = []
        for page in paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": progress_pk(pipeline)}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                observed.append(
                    Observed(
                        progress_from_item(item),
                        _text(item, "stream"),
                        _text(item, "lambda_touch"),
                        _int(item, "touched_ms"),
                        _int(item, "quiet_since_ms"),
                    )
                )
        return observed

    def note_quiet(self, pipeline: str, seen: Observed, now_ms: int) -> bool:
        """Record that the shard was found at its tip now (unless it changed since)."""
        return self._mark(pipeline, seen, "SET quiet_since_ms = :now", now_ms)

    def mark_idle(self, pipeline: str, seen: Observed, now_ms: int) -> bool:
        """Mark the shard idle (unless it changed since ``seen``)."""
        return self._mark(pipeline, seen, "SET idle_since_ms = :now REMOVE quiet_since_ms", now_ms)

    def mark_ended(self, pipeline: str, seen: Observed) -> bool:
        """Record that the shard was read to its end (unless it changed since ``seen``)."""
        return self._mark(pipeline, seen, "SET ended = :true", None)

    def _mark(self, pipeline: str, seen: Observed, update: str, now_ms: int | None) -> bool:
        progress = seen.progress
        values: dict[str, Any] = {":false": {"BOOL": False}}
        conditions = ["attribute_exists(pk)", "(attribute_not_exists(ended) OR ended = :false)"]
        if now_ms is not None:
            values[":now"] = {"N": str(now_ms)}
            conditions.append("attribute_not_exists(idle_since_ms)")
        else:
            values[":true"] = {"BOOL": True}
        if progress.checkpoint is None:
            conditions.append("attribute_not_exists(checkpoint)")
        else:
            conditions.append("checkpoint = :c")
            values[":c"] = {"S": progress.checkpoint.storage_key()}
        if seen.touch is None:
            conditions.append("attribute_not_exists(lambda_touch)")
        else:
            conditions.append("lambda_touch = :t")
            values[":t"] = {"S": seen.touch}
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key(pipeline, progress.shard_id),
                UpdateExpression=update,
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True
