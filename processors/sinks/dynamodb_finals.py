"""Final rows, the window index, the finalizer's cursor and sent alerts, in the results
table (the item layout is in processors/sinks/dynamodb_store.py and the README).

Every read here is strongly consistent and none is a Scan: the window index lives in the
table itself (items, not a global secondary index, whose reads are only eventually
consistent and could hide a partial row from the finalizer).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from processors.alerts import Alert, json_safe
from processors.windowing.finals import FinalRow
from processors.windowing.records import Position
from processors.windowing.rows import StoredRow
from processors.windowing.windows import Window
from streams.aws_errors import is_conditional_failure
from streams.backoff import full_jitter

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BATCH_GET_LIMIT = 100
_READERS = 4
"""BatchGetItem calls of one read in flight at once."""
_INDEX_CACHE_ENTRIES = 200_000
"""(window, key, shard) index entries this process remembers writing (about 30 MB at
most); beyond it the oldest windows are forgotten first (their entries are written again
if a row of theirs is, which is harmless)."""

INDEX_MIN_LIFE_S = 7 * 86_400
"""Index entries live at least this long from when they are written, whatever the result
TTL: the finalizer must find every partial row of a window, even one read long after it
ended (a replay, a runner that was down)."""


def row_pk(pipeline: str, key: str) -> str:
    return f"row#{pipeline}#{key}"


def row_sk(window_start_ms: int, shard_id: str) -> str:
    return f"{window_start_ms:013d}#{shard_id}"


def windows_pk(pipeline: str) -> str:
    return f"windows#{pipeline}"


def window_keys_pk(pipeline: str, window_start_ms: int) -> str:
    return f"keys#{pipeline}#{window_start_ms:013d}"


def final_pk(pipeline: str, key: str) -> str:
    return f"final#{pipeline}#{key}"


def top_pk(pipeline: str, window_start_ms: int) -> str:
    return f"top#{pipeline}#{window_start_ms:013d}"


def alerts_pk(pipeline: str) -> str:
    return f"alerts#{pipeline}"


def cursor_pk(pipeline: str) -> str:
    return f"finalizer#{pipeline}"


def key_digest(key: str) -> str:
    """A fixed-size stand-in for ``key`` in sort keys (the key itself is an attribute)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _start_sk(window_start_ms: int) -> dict[str, str]:
    return {"S": f"{window_start_ms:013d}"}


def row_from_item(item: dict[str, Any]) -> StoredRow:
    return StoredRow(
        pipeline=item["pipeline"]["S"],
        key=item["key"]["S"],
        window=Window(int(item["window_start"]["N"]), int(item["window_end"]["N"])),
        shard_id=item["shard_id"]["S"],
        high_water=Position.from_storage_key(item["hw"]["S"]),
        state=bytes(item["state"]["B"]),
    )


def _final_item(row: FinalRow, expires_at: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": final_pk(row.pipeline, row.key)},
        "sk": _start_sk(row.sort_ms),
        "kind": {"S": "final"},
        "pipeline": {"S": row.pipeline},
        "key": {"S": row.key},
        "window_start": {"N": str(row.window_start_ms)},
        "window_end": {"N": str(row.window_end_ms)},
        "values": {"S": values_json(row.values)},
        "state": {"B": row.state},
        "shards": {"N": str(row.shards)},
    }
    if row.slot_ms is not None:
        item["slot"] = {"N": str(row.slot_ms)}
    if expires_at is not None:
        item["expires_at"] = {"N": str(expires_at)}
    return item


def values_json(values: Mapping[str, Any]) -> str:
    """The values as JSON for any reader: NaN and infinities as null, top-k pairs as
    lists, integers of any size (the exact values are in ``state``)."""
    return json.dumps(json_safe(dict(values)), separators=(",", ":"), allow_nan=False)


_VALUES_ONLY = {
    "ProjectionExpression": "pk, sk, #p, #k, window_start, window_end, #v, shards, slot",
    "ExpressionAttributeNames": {"#p": "pipeline", "#k": "key", "#v": "values"},
}
"""A final row without its states (``state`` reads as empty)."""


def final_from_item(item: dict[str, Any]) -> FinalRow:
    return FinalRow(
        pipeline=item["pipeline"]["S"],
        key=item["key"]["S"],
        window_start_ms=int(item["window_start"]["N"]),
        window_end_ms=int(item["window_end"]["N"]),
        values=json.loads(item["values"]["S"]),
        state=bytes(item["state"]["B"]) if "state" in item else b"",
        shards=int(item["shards"]["N"]),
        slot_ms=int(item["slot"]["N"]) if "slot" in item else None,
    )


class DynamoFinals:
    """The :class:`~processors.sinks.ports.FinalStore` half of the DynamoDB store."""

    _client: DynamoDBClient
    _table: str
    _pool: ThreadPoolExecutor

    def _init_finals(self, result_ttl_s: Mapping[str, int]) -> None:
        self._readers = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="ddb-reader")
        self._result_ttl_s = dict(result_ttl_s)
        self._index_lock = threading.Lock()
        self._indexed: dict[str, dict[int, set[tuple[str, str]]]] = {}
        self._index_entries = 0

    # -- the window index, written with partial rows --------------------------------

    def _index_expiry(self, row: StoredRow) -> dict[str, Any]:
        ttl = self._result_ttl_s.get(row.pipeline)
        if ttl is None:
            return {}
        expires = max(row.window.end_ms // 1000 + ttl, int(time.time()) + INDEX_MIN_LIFE_S)
        return {"expires_at": {"N": str(expires)}}

    def _index_row(self, row: StoredRow) -> None:
        """Write the index entries of ``row`` unless this process already did."""
        start = row.window.start_ms
        entry = (row.key, row.shard_id)
        with self._index_lock:
            by_start = self._indexed.setdefault(row.pipeline, {})
            seen = by_start.get(start)
            if seen is not None and entry in seen:
                return
        expiry = self._index_expiry(row)
        if seen is None:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": windows_pk(row.pipeline)},
                    "sk": _start_sk(start),
                    "kind": {"S": "window"},
                    "window_start": {"N": str(start)},
                    "window_end": {"N": str(row.window.end_ms)},
                    **expiry,
                },
            )
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": window_keys_pk(row.pipeline, start)},
                # Keys may be up to 1 KiB, the limit of a whole sort key: hash them.
                "sk": {"S": f"{key_digest(row.key)}#{row.shard_id}"},
                "kind": {"S": "window-key"},
                "key": {"S": row.key},
                "shard_id": {"S": row.shard_id},
                **expiry,
            },
        )
        with self._index_lock:
            by_start = self._indexed.setdefault(row.pipeline, {})
            written = by_start.setdefault(start, set())
            if entry not in written:
                written.add(entry)
                self._index_entries += 1
            while self._index_entries > _INDEX_CACHE_ENTRIES and len(by_start) > 1:
                self._index_entries -= len(by_start.pop(min(by_start)))

    def backfill_index(self, pipeline: str) -> int:
        seen = 0
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            ConsistentRead=True,
            FilterExpression="begins_with(pk, :prefix)",
            ProjectionExpression="#p, #k, window_start, window_end, shard_id",
            ExpressionAttributeNames={"#p": "pipeline", "#k": "key"},
            ExpressionAttributeValues={":prefix": {"S": row_pk(pipeline, "")}},
        )
        for page in pages:
            rows = [
                StoredRow(
                    item["pipeline"]["S"],
                    item["key"]["S"],
                    Window(int(item["window_start"]["N"]), int(item["window_end"]["N"])),
                    item["shard_id"]["S"],
                    Position(0),
                    b"",
                )
                for item in page.get("Items", [])
            ]
            for _ in self._pool.map(self._index_row, rows):
                pass
            seen += len(rows)
        return seen

    def window_starts(self, pipeline: str, start_from_ms: int, start_before_ms: int) -> list[int]:
        if start_before_ms <= start_from_ms:
            return []
        items = self._pages(
            "query",
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues={
                ":pk": {"S": windows_pk(pipeline)},
                ":low": _start_sk(max(0, start_from_ms)),
                ":high": _start_sk(start_before_ms - 1),
            },
        )
        return [int(item["window_start"]["N"]) for item in items]

    def window_keys(self, pipeline: str, window_start_ms: int) -> list[str]:
        entries = self._pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": window_keys_pk(pipeline, window_start_ms)}},
            ProjectionExpression="#k",
            ExpressionAttributeNames={"#k": "key"},
        )
        return sorted({entry["key"]["S"] for entry in entries})

    def latest_window_start(self, pipeline: str, start_before_ms: int) -> int | None:
        if start_before_ms <= 0:
            return None
        response = self._client.query(
            TableName=self._table,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND sk <= :high",
            ExpressionAttributeValues={
                ":pk": {"S": windows_pk(pipeline)},
                ":high": _start_sk(min(start_before_ms, 10**13) - 1),
            },
            ScanIndexForward=False,
            Limit=1,
        )
        items = response.get("Items", [])
        return int(items[0]["window_start"]["N"]) if items else None

    def window_rows(self, pipeline: str, window_start_ms: int) -> list[StoredRow]:
        entries = self._pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": window_keys_pk(pipeline, window_start_ms)}},
        )
        keys = [
            {
                "pk": {"S": row_pk(pipeline, entry["key"]["S"])},
                "sk": {"S": row_sk(window_start_ms, entry["shard_id"]["S"])},
            }
            for entry in entries
        ]
        return [row_from_item(item) for item in self._batch_get(keys)]

    # -- final rows -----------------------------------------------------------------

    def write_finals(self, rows: Sequence[FinalRow], expires_at: int | None) -> list[FinalRow]:
        def write(row: FinalRow) -> FinalRow:
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item=_final_item(row, expires_at),
                    ConditionExpression="attribute_not_exists(pk)",
                )
                return row
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
            stored = self._client.get_item(
                TableName=self._table,
                Key={
                    "pk": {"S": final_pk(row.pipeline, row.key)},
                    "sk": _start_sk(row.sort_ms),
                },
                ConsistentRead=True,
            )
            return final_from_item(stored["Item"])

        return list(self._pool.map(write, rows))

    def read_finals(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
        with_states: bool = True,
    ) -> list[FinalRow]:
        low = 0 if start_from_ms is None else max(0, start_from_ms)
        high = 10**13 if start_before_ms is None else max(0, start_before_ms)
        if high <= low:
            return []
        # Without the states (a sketch is kilobytes; the values a few hundred bytes), a
        # query moves and parses a twentieth of the data. DynamoDB still charges reads
        # by the whole item.
        projection: dict[str, Any] = {} if with_states else _VALUES_ONLY
        if key is not None:
            items = self._pages(
                "query",
                KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
                ExpressionAttributeValues={
                    ":pk": {"S": final_pk(pipeline, key)},
                    ":low": _start_sk(low),
                    ":high": _start_sk(high - 1),
                },
                **projection,
            )
            return [final_from_item(item) for item in items]
        finals: list[FinalRow] = []
        for start in self.window_starts(pipeline, low, high):
            keys = self.window_keys(pipeline, start)
            wanted = [{"pk": {"S": final_pk(pipeline, k)}, "sk": _start_sk(start)} for k in keys]
            finals.extend(final_from_item(item) for item in self._batch_get(wanted, projection))
        return finals

    def write_top_keys(
        self,
        pipeline: str,
        window_start_ms: int,
        window_end_ms: int,
        top: Mapping[str, Sequence[tuple[str, float]]],
        keys: int,
        expires_at: int | None,
    ) -> None:
        def write(aggregate: str) -> None:
            item: dict[str, Any] = {
                "pk": {"S": top_pk(pipeline, window_start_ms)},
                "sk": {"S": aggregate},
                "kind": {"S": "top"},
                "window_start": {"N": str(window_start_ms)},
                "window_end": {"N": str(window_end_ms)},
                "keys": {"N": str(keys)},
                "top": {"S": values_json({"top": top[aggregate]})},
            }
            if expires_at is not None:
                item["expires_at"] = {"N": str(expires_at)}
            self._client.put_item(TableName=self._table, Item=item)

        for _ in self._pool.map(write, list(top)):
            pass

    def read_top_keys(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> list[tuple[str, float]] | None:
        found = self.read_top(pipeline, window_start_ms, aggregate)
        return None if found is None else found[0]

    def read_top(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> tuple[list[tuple[str, float]], int] | None:
        response = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": top_pk(pipeline, window_start_ms)}, "sk": {"S": aggregate}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return None
        ranked = [(key, value) for key, value in json.loads(item["top"]["S"])["top"]]
        return ranked, int(item["keys"]["N"])

    def expire_partials(self, rows: Sequence[StoredRow], expires_at: int) -> None:
        def expire(row: StoredRow) -> None:
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={
                        "pk": {"S": row_pk(row.pipeline, row.key)},
                        "sk": {"S": row_sk(row.window.start_ms, row.shard_id)},
                    },
                    UpdateExpression="SET expires_at = :e",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":e": {"N": str(expires_at)}},
                )
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise

        for _ in self._pool.map(expire, rows):
            pass

    # -- the cursor and sent alerts -------------------------------------------------

    def finalized_through(self, pipeline: str) -> int | None:
        response = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": cursor_pk(pipeline)}, "sk": {"S": "cursor"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return int(item["through"]["N"]) if item else None

    def set_finalized_through(self, pipeline: str, through: int) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": cursor_pk(pipeline)}, "sk": {"S": "cursor"}},
                UpdateExpression="SET through = :t, kind = :k",
                ConditionExpression="attribute_not_exists(through) OR through < :t",
                ExpressionAttributeValues={":t": {"N": str(through)}, ":k": {"S": "cursor"}},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise  # else another finalizer got at least as far

    def unsent_alerts(self, pipeline: str, alert_ids: Sequence[str]) -> set[str]:
        keys = [{"pk": {"S": alerts_pk(pipeline)}, "sk": {"S": i}} for i in set(alert_ids)]
        sent = {item["sk"]["S"] for item in self._batch_get(keys)}
        return set(alert_ids) - sent

    def record_alerts_sent(
        self,
        pipeline: str,
        alerts: Sequence[Alert],
        expires_at: int | None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        now = str(int(time.time() * 1000))
        reasons = refused or {}

        def record(alert: Alert) -> None:
            item: dict[str, Any] = {
                "pk": {"S": alerts_pk(pipeline)},
                "sk": {"S": alert.alert_id},
                "kind": {"S": "alert"},
                "rule": {"S": alert.rule.text},
                "key": {"S": alert.key},
                "window_start": {"N": str(alert.window_start_ms)},
                "window_end": {"N": str(alert.window_end_ms)},
                "sent_at": {"N": now},
                "state": {"S": "refused" if alert.alert_id in reasons else "sent"},
            }
            if alert.alert_id in reasons:
                item["error"] = {"S": reasons[alert.alert_id][:2000]}
            if expires_at is not None:
                item["expires_at"] = {"N": str(expires_at)}
            self._client.put_item(TableName=self._table, Item=item)

        for _ in self._pool.map(record, alerts):
            pass

    # -- reading --------------------------------------------------------------------

    def _pages(self, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a paginated, strongly consistent Query."""
        paginator = self._client.get_paginator(operation)  # type: ignore[call-overload]
        return [
            item
            for page in paginator.paginate(TableName=self._table, ConsistentRead=True, **kwargs)
            for item in page.get("Items", [])
        ]

    def _batch_get(
        self, keys: Iterable[dict[str, Any]], projection: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The items among ``keys`` that exist (strongly consistent; UnprocessedKeys are
        asked again with backoff), with ``projection`` (ProjectionExpression and its
        names) if given. Batches of 100 go out a few at a time, on a pool of their own
        (so that a read never waits behind, or inside, the writers' pool)."""
        keys = list(keys)
        batches = [
            keys[offset : offset + _BATCH_GET_LIMIT]
            for offset in range(0, len(keys), _BATCH_GET_LIMIT)
        ]

        def get(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            request: dict[str, Any] = {
                self._table: {"Keys": batch, "ConsistentRead": True, **(projection or {})}
            }
            found: list[dict[str, Any]] = []
            attempt = 0
            while request:
                if attempt:
                    time.sleep(full_jitter(attempt, base=0.05, cap=2.0))
                response = self._client.batch_get_item(RequestItems=request)
                found.extend(response["Responses"].get(self._table, []))
                request = response.get("UnprocessedKeys") or {}
                attempt += 1
            return found

        if len(batches) <= 1:
            return get(batches[0]) if batches else []
        return [item for found in self._readers.map(get, batches) for item in found]
