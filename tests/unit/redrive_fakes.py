"""Fakes and helpers for the redrive tests (no tests here): an SQS queue with visibility
timeouts on a clock the test moves, dead letter bodies, placements."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from processors.pipeline import Pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dead_letters import dead_letter_body
from processors.windowing.engine import DeadLetter, ShardProgress
from processors.windowing.records import Position, Record
from schemas.page_views import PageView, decode_page_view
from shardflow.redrive import redrive
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import Placement
from streams.shard_map import MAX_HASH_KEY
from tests.unit.fake_producer import FakeProducer

T0 = 1_794_999_980_000
"""An event time 20 s into a page-views window ([T0 - 20 s, T0 + 40 s))."""


def decode_with_default_page(data: bytes) -> PageView:
    """page-views' schema, "fixed": a missing page is "/unknown"."""
    event = orjson.loads(data)
    if isinstance(event, dict) and "page" not in event:
        data = orjson.dumps({**event, "page": "/unknown"})
    return decode_page_view(data)


FIXED: Pipeline[PageView] = replace(PAGE_VIEWS, decode=decode_with_default_page)


@dataclass
class FakeSqs:
    """A standard queue with visibility timeouts, on a clock the test moves.

    Receives hand out visible messages in the order they were sent; ``unreachable``
    messages are counted in the queue's depth but never handed out (SQS samples its
    servers). ``on_receive`` runs before each receive (to fill the queue, move the clock).
    """

    now: float = 0.0
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    receives: list[dict[str, Any]] = field(default_factory=list)
    visibility_changes: list[tuple[str, int]] = field(default_factory=list)
    unreachable: int = 0
    on_receive: Callable[[FakeSqs], None] | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _receipts: itertools.count[int] = field(default_factory=itertools.count)

    def send(self, body: dict[str, Any] | str) -> str:
        message_id = f"m{next(self._ids)}"
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        self.messages[message_id] = {
            "body": text,
            "visible_at": 0.0,
            "receipt": None,
            "receive_count": 0,
        }
        return message_id

    def visible(self) -> list[str]:
        return [mid for mid, m in self.messages.items() if m["visible_at"] <= self.now]

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(m["body"]) for m in self.messages.values()]

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        if self.on_receive is not None:
            self.on_receive(self)
        self.receives.append(kwargs)
        out = []
        for message_id in self.visible()[: kwargs["MaxNumberOfMessages"]]:
            message = self.messages[message_id]
            message["visible_at"] = self.now + kwargs["VisibilityTimeout"]
            message["receipt"] = f"{message_id}/{next(self._receipts)}"
            message["receive_count"] += 1
            out.append(
                {
                    "MessageId": message_id,
                    "ReceiptHandle": message["receipt"],
                    "Body": message["body"],
                }
            )
        return {"Messages": out} if out else {}

    def _by_receipt(self, receipt: str) -> str | None:
        message_id = receipt.split("/", maxsplit=1)[0]
        message = self.messages.get(message_id)
        return message_id if message is not None and message["receipt"] == receipt else None

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        message_id = self._by_receipt(ReceiptHandle)
        assert message_id is not None, "stale receipt handle"
        del self.messages[message_id]

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[Any]) -> Any:
        assert len(Entries) <= 10
        done, failed = [], []
        for entry in Entries:
            message_id = self._by_receipt(entry["ReceiptHandle"])
            if message_id is None or self.messages[message_id]["visible_at"] <= self.now:
                failed.append({"Id": entry["Id"], "Code": "MessageNotInflight"})
                continue
            self.messages[message_id]["visible_at"] = self.now + entry["VisibilityTimeout"]
            self.visibility_changes.append((message_id, entry["VisibilityTimeout"]))
            done.append({"Id": entry["Id"]})
        return {"Successful": done, "Failed": failed}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> Any:
        visible = len(self.visible())
        return {
            "Attributes": {
                "ApproximateNumberOfMessages": str(visible + self.unreachable),
                "ApproximateNumberOfMessagesNotVisible": str(len(self.messages) - visible),
            }
        }


def body(
    sequence: int,
    event: dict[str, Any] | None = None,
    *,
    pipeline: str = "page-views",
    reason: str = "invalid",
    data: bytes | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A dead letter body, of a page view without a page unless told."""
    if data is None:
        data = orjson.dumps(event if event is not None else {"event_id": f"e{sequence}", "ts": T0})
    record = Record("shardId-000000000001", Position(sequence), key or f"key-{sequence}", data, T0)
    return dead_letter_body(DeadLetter(reason, "page is required", pipeline, record), "clicks")


def shard(number: int, start: int, end: int, *parents: str) -> dict[str, Any]:
    """A ListShards entry of an open shard."""
    entry: dict[str, Any] = {
        "ShardId": f"shardId-{number:012d}",
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
    }
    if parents:
        entry["ParentShardId"] = parents[0]
    return entry


HALF = MAX_HASH_KEY // 2
TWO_SHARDS = [shard(0, 0, HALF), shard(1, HALF + 1, MAX_HASH_KEY)]


def placement(
    progress: Sequence[ShardProgress] = (),
    shards: Sequence[dict[str, Any]] = TWO_SHARDS,
    lateness_ms: int = PAGE_VIEWS.allowed_lateness_ms,
) -> Callable[[], Placement]:
    return lambda: Placement(shards, progress, lateness_ms)


def run(
    sqs: FakeSqs,
    producer: Any,
    ledger: Any,
    pipeline: Pipeline[Any] = FIXED,
    where: Callable[[], Placement] | None = None,
    **kwargs: Any,
) -> RedriveReport:
    return redrive(
        sqs,
        "https://sqs.example/123/dead",
        pipeline,
        producer,
        ledger,
        where or placement(),
        clock_ms=lambda: T0,
        clock=lambda: sqs.now,
        **kwargs,
    )


def closed(producer: FakeProducer) -> FakeProducer:
    producer.close()
    return producer
