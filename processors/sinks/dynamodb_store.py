"""Partial rows and shard progress in one DynamoDB table (the results table).

Layout (hash key ``pk``, range key ``sk``, both strings):

======================  =====================================  ============================
item                    pk                                     sk
======================  =====================================  ============================
partial row             ``row#<pipeline>#<key>``               ``<start>#<shard>``
shard progress          ``shards#<pipeline>``                  ``<shard id>``
window (index)          ``windows#<pipeline>``                 ``<start>``
window key (index)      ``keys#<pipeline>#<start>``            ``<key>#<shard>``
final row               ``final#<pipeline>#<key>``             ``<start>``
top keys of a window    ``top#<pipeline>#<start>``             ``<aggregate>``
sent alert              ``alerts#<pipeline>``                  ``<alert id>``
finalizer cursor        ``finalizer#<pipeline>``               ``cursor``
======================  =====================================  ============================

``<start>`` is the window start in epoch milliseconds, 13 digits. One key over a time
range is a single Query (partial or final rows); the windows of a time range, and all
keys of one window, are single Queries of the index items; a shard's progress for a
pipeline is a single Query. Items that can expire carry ``expires_at`` (epoch seconds;
``shardflow up`` turns on the table's TTL for it). Rows hold absolute aggregate states
(``state``, the codec's versioned JSON) and the highest position they include (``hw``,
fixed-width text so DynamoDB compares it in order).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from processors.sinks.dynamodb_finals import DynamoFinals, row_from_item, row_pk, row_sk
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.windowing.engine import Intent, ShardProgress
from processors.windowing.records import Position
from processors.windowing.redrive_claims import Claim
from processors.windowing.rows import RowKey, StoredRow
from streams.aws_errors import is_conditional_failure

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger("shardflow.store")

_WRITERS = 8


def progress_pk(pipeline: str) -> str:
    return f"shards#{pipeline}"


def claims_pk(pipeline: str) -> str:
    return f"redriven#{pipeline}"


def _position_or_none(item: dict[str, Any], name: str) -> Position | None:
    value = item.get(name)
    return Position.from_storage_key(value["S"]) if value else None


def _int_or_none(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value else None


def progress_from_item(item: dict[str, Any]) -> ShardProgress:
    return ShardProgress(
        shard_id=item["sk"]["S"],
        checkpoint=_position_or_none(item, "checkpoint"),
        max_event_time=_int_or_none(item, "max_event_time"),
        horizon=_int_or_none(item, "horizon"),
        dead_letters_through=_position_or_none(item, "dead_letters_through"),
        ended=item.get("ended", {}).get("BOOL", False),
        idle_since_ms=_int_or_none(item, "idle_since_ms"),
        watermark_floor=_int_or_none(item, "watermark_floor"),
    )


class DynamoPartialStore(DynamoFinals):
    """:class:`~processors.sinks.ports.PartialStore` on DynamoDB with conditional writes."""

    def __init__(
        self, client: DynamoDBClient, table: str, result_ttl_s: Mapping[str, int] | None = None
    ) -> None:
        """``result_ttl_s``: per pipeline, how long its results live after their window
        ends (seconds); pipelines not named keep theirs."""
        self._client = client
        self._table = table
        self._pool = ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="ddb-writer")
        self._init_finals(result_ttl_s or {})

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    # -- progress -------------------------------------------------------------------

    def register_shard(
        self, pipeline: str, stream: str, shard_id: str, watermark_floor: int | None = None
    ) -> ShardProgress:
        item: dict[str, Any] = {
            "pk": {"S": progress_pk(pipeline)},
            "sk": {"S": shard_id},
            "kind": {"S": "progress"},
            "stream": {"S": stream},
        }
        if watermark_floor is not None:
            item["watermark_floor"] = {"N": str(watermark_floor)}
        try:
            self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
            return ShardProgress(shard_id, watermark_floor=watermark_floor)
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
        response = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": progress_pk(pipeline)}, "sk": {"S": shard_id}},
            ConsistentRead=True,
        )
        item = response["Item"]
        stored = item.get("stream", {}).get("S", stream)
        if stored != stream:
            raise StreamMismatch(pipeline, stored, stream)
        return progress_from_item(item)

    def write_intent(self, pipeline: str, stream: str, intent: Intent) -> None:
        values: dict[str, Any] = {}
        sets = []
        if intent.horizon is not None:
            sets.append("horizon = :h")
            values[":h"] = {"N": str(intent.horizon)}
        if intent.dead_letters_through is not None:
            sets.append("dead_letters_through = :d")
            values[":d"] = {"S": intent.dead_letters_through.storage_key()}
        if not sets:
            return
        condition = "attribute_not_exists(horizon) OR horizon <= :h" if ":h" in values else None
        kwargs: dict[str, Any] = {}
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": progress_pk(pipeline)}, "sk": {"S": intent.shard_id}},
                UpdateExpression="SET " + ", ".join(sets),
                ExpressionAttributeValues=values,
                **kwargs,
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise StaleWrite(
                    f"the horizon of {pipeline}/{intent.shard_id} moved past {intent.horizon}: "
                    "another runner is processing this shard"
                ) from exc
            raise

    def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None:
        item: dict[str, Any] = {
            "pk": {"S": progress_pk(pipeline)},
            "sk": {"S": progress.shard_id},
            "kind": {"S": "progress"},
            "stream": {"S": stream},
            "ended": {"BOOL": progress.ended},
        }
        condition: dict[str, Any] = {
            # Nothing read yet (an empty shard that ended): there must be no checkpoint.
            "ConditionExpression": "attribute_not_exists(checkpoint)"
        }
        if progress.checkpoint is not None:
            item["checkpoint"] = {"S": progress.checkpoint.storage_key()}
            item["sequence_number"] = {"S": progress.checkpoint.sequence_number}
            item["sub_sequence_number"] = {"N": str(progress.checkpoint.sub)}
            condition = {
                "ConditionExpression": "attribute_not_exists(checkpoint) OR checkpoint <= :c",
                "ExpressionAttributeValues": {":c": item["checkpoint"]},
            }
        if progress.max_event_time is not None:
            item["max_event_time"] = {"N": str(progress.max_event_time)}
        if progress.horizon is not None:
            item["horizon"] = {"N": str(progress.horizon)}
        if progress.dead_letters_through is not None:
            item["dead_letters_through"] = {"S": progress.dead_letters_through.storage_key()}
        if progress.idle_since_ms is not None:
            item["idle_since_ms"] = {"N": str(progress.idle_since_ms)}
        if progress.watermark_floor is not None:
            item["watermark_floor"] = {"N": str(progress.watermark_floor)}
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                **condition,
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                where = progress.checkpoint.sequence_number if progress.checkpoint else "nothing"
                raise StaleWrite(
                    f"the checkpoint of {pipeline}/{progress.shard_id} is already past "
                    f"{where}: another runner is processing this shard"
                ) from exc
            raise

    def read_progress(self, pipeline: str) -> list[ShardProgress]:
        items = self._all_pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": progress_pk(pipeline)}},
            ConsistentRead=True,
        )
        return [progress_from_item(item) for item in items]

    # -- redriven records ------------------------------------------------------------

    def load_redrive_claims(self, pipeline: str, redrive_ids: Sequence[str]) -> dict[str, Claim]:
        keys = [{"pk": {"S": claims_pk(pipeline)}, "sk": {"S": i}} for i in set(redrive_ids)]
        return {
            item["sk"]["S"]: (
                item["shard_id"]["S"],
                Position.from_storage_key(item["position"]["S"]),
            )
            for item in self._batch_get(keys)
        }

    def write_redrive_claims(
        self, pipeline: str, shard_id: str, claims: Mapping[str, Position]
    ) -> None:
        def claim(item: tuple[str, Position]) -> None:
            redrive_id, position = item
            values = {":s": {"S": shard_id}, ":p": {"S": position.storage_key()}}
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "pk": {"S": claims_pk(pipeline)},
                        "sk": {"S": redrive_id},
                        "kind": {"S": "redrive-claim"},
                        "shard_id": values[":s"],
                        "position": values[":p"],
                    },
                    ConditionExpression=(
                        "attribute_not_exists(pk) OR (shard_id = :s AND #pos = :p)"
                    ),
                    ExpressionAttributeNames={"#pos": "position"},
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
                log.error(
                    "%s: redriven record %s was counted on %s too, at the same time as on "
                    "another shard (copies put back across a reshard)",
                    pipeline,
                    redrive_id,
                    shard_id,
                )

        for _ in self._pool.map(claim, list(claims.items())):
            pass

    # -- rows -----------------------------------------------------------------------

    def load_rows(self, pipeline: str, shard_id: str, keys: Sequence[RowKey]) -> list[StoredRow]:
        wanted = [
            {"pk": {"S": row_pk(pipeline, key)}, "sk": {"S": row_sk(start, shard_id)}}
            for key, start in keys
        ]
        return [row_from_item(item) for item in self._batch_get(wanted)]

    def write_rows(self, rows: Sequence[StoredRow]) -> None:
        for failure in self._pool.map(self._write_row, rows):
            if failure is not None:
                raise failure

    def _write_row(self, row: StoredRow) -> Exception | None:
        hw = {"S": row.high_water.storage_key()}
        try:
            self._index_row(row)
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": row_pk(row.pipeline, row.key)},
                    "sk": {"S": row_sk(row.window.start_ms, row.shard_id)},
                    "kind": {"S": "partial"},
                    "pipeline": {"S": row.pipeline},
                    "key": {"S": row.key},
                    "shard_id": {"S": row.shard_id},
                    "window_start": {"N": str(row.window.start_ms)},
                    "window_end": {"N": str(row.window.end_ms)},
                    "hw": hw,
                    "state": {"B": row.state},
                },
                ConditionExpression="attribute_not_exists(pk) OR hw <= :hw",
                ExpressionAttributeValues={":hw": hw},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return StaleWrite(
                    f"row {row.key!r} window {row.window.start_ms} of shard {row.shard_id} "
                    "holds newer data: another runner is processing this shard"
                )
            return exc
        return None

    def read_rows(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
    ) -> list[StoredRow]:
        low = 0 if start_from_ms is None else max(0, start_from_ms)
        high = 10**13 if start_before_ms is None else max(0, start_before_ms)
        if high <= low:
            return []
        if key is not None:
            items = self._all_pages(
                "query",
                ConsistentRead=True,
                KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
                ExpressionAttributeValues={
                    ":pk": {"S": row_pk(pipeline, key)},
                    ":low": {"S": f"{low:013d}"},
                    ":high": {"S": f"{high - 1:013d}#~"},
                },
            )
        else:
            items = self._all_pages(
                "scan",
                ConsistentRead=True,
                FilterExpression="begins_with(pk, :prefix) AND window_start BETWEEN :low AND :high",
                ExpressionAttributeValues={
                    ":prefix": {"S": row_pk(pipeline, "")},
                    ":low": {"N": str(low)},
                    ":high": {"N": str(high - 1)},
                },
            )
        return [row_from_item(item) for item in items]

    def _all_pages(self, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated Query or Scan."""
        paginator = self._client.get_paginator(operation)  # type: ignore[call-overload]
        return [
            item
            for page in paginator.paginate(TableName=self._table, **kwargs)
            for item in page.get("Items", [])
        ]
