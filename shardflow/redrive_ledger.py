"""What redrive has put back, so that ``shardflow dead-letters --redrive`` does not put a
record it knows is in the stream again.

Each redriven record goes through ``sending`` (claimed: about to be put, or being put, or
its put failed without a clear answer) and ``sent`` (Kinesis took it; the SQS message may
not be deleted yet). A later run only deletes a letter whose records are ``sent``; one at
``sending`` may or may not be in the stream, and is put again: the pipeline counts one
copy of each redriven record, by its id (:mod:`processors.windowing.redrive_claims`).

The DynamoDB ledger lives in the pipeline's results table, one item per redriven record:
pk ``redrive#<pipeline>``, sk ``<dead_letter_id>`` (``<dead_letter_id>/<index>`` for the
user records of a letter holding a KPL aggregate), with ``state``, ``shard_id``,
``sequence_number`` and ``updated_ms``. Items stay after the message is deleted: the runner
may have sent the same letter twice (dead letters are at least once), and the second copy
must find ``sent``. (Nothing expires them yet.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from streams.aws_errors import is_conditional_failure

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

NEW = "new"
"""``claim`` took the letter: put it."""
SENDING = "sending"
"""Claimed before, never marked sent: a crash while it was being put, or a put that failed
(it may be in the stream), or a redrive running now."""
SENT = "sent"
"""Kinesis took it before; only the SQS message is left to delete."""

_CLAIM_ATTEMPTS = 5


class RedriveLedger(Protocol):
    def state(self, dead_letter_id: str) -> str | None:
        """The state recorded (:data:`SENDING` or :data:`SENT`), or None; claims nothing."""
        ...

    def claim(self, dead_letter_id: str) -> str:
        """Record ``sending`` unless the letter is known: :data:`NEW` when this call
        claimed it, else the state found (:data:`SENDING` or :data:`SENT`)."""
        ...

    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        """Kinesis took the letter, at this position."""
        ...

    def release(self, dead_letter_id: str) -> None:
        """The put failed for certain: forget a ``sending`` claim, so a later redrive
        tries again. A ``sent`` letter stays sent."""
        ...


@dataclass
class MemoryRedriveLedger:
    """In memory, for tests."""

    states: dict[str, str] = field(default_factory=dict)
    positions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def state(self, dead_letter_id: str) -> str | None:
        return self.states.get(dead_letter_id)

    def claim(self, dead_letter_id: str) -> str:
        found = self.states.get(dead_letter_id)
        if found is not None:
            return found
        self.states[dead_letter_id] = SENDING
        return NEW

    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        self.states[dead_letter_id] = SENT
        self.positions[dead_letter_id] = (shard_id, sequence_number)

    def release(self, dead_letter_id: str) -> None:
        if self.states.get(dead_letter_id) == SENDING:
            del self.states[dead_letter_id]


def ledger_pk(pipeline: str) -> str:
    return f"redrive#{pipeline}"


class DynamoRedriveLedger:
    """The ledger in a DynamoDB table with string keys ``pk`` and ``sk`` (the results
    table). Every read is strongly consistent."""

    def __init__(self, dynamodb: DynamoDBClient, table: str, pipeline: str) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._pk = ledger_pk(pipeline)

    def _key(self, dead_letter_id: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": self._pk}, "sk": {"S": dead_letter_id}}

    def state(self, dead_letter_id: str) -> str | None:
        item = self._dynamodb.get_item(
            TableName=self._table, Key=self._key(dead_letter_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else item["state"]["S"]

    def claim(self, dead_letter_id: str) -> str:
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                self._dynamodb.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(dead_letter_id),
                        "state": {"S": SENDING},
                        "updated_ms": {"N": str(_now_ms())},
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
                return NEW
            except ClientError as exc:
                if not is_conditional_failure(exc):
                    raise
            item = self._dynamodb.get_item(
                TableName=self._table, Key=self._key(dead_letter_id), ConsistentRead=True
            ).get("Item")
            if item is not None:
                return item["state"]["S"]
            # Released between the two calls: claim again.
        raise RuntimeError(f"could not claim {dead_letter_id} in the redrive ledger")

    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                **self._key(dead_letter_id),
                "state": {"S": SENT},
                "shard_id": {"S": shard_id},
                "sequence_number": {"S": sequence_number},
                "updated_ms": {"N": str(_now_ms())},
            },
        )

    def release(self, dead_letter_id: str) -> None:
        try:
            self._dynamodb.delete_item(
                TableName=self._table,
                Key=self._key(dead_letter_id),
                ConditionExpression="#s = :sending",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":sending": {"S": SENDING}},
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise


def _now_ms() -> int:
    return int(time.time() * 1000)
