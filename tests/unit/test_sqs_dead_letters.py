"""The SQS dead-letter sink on a fake SQS client that checks what SQS checks.

SQS counts sizes in UTF-8 bytes, and a message's attributes (names, data types, values)
count towards it: a message, and a whole SendMessageBatch, are at most 262,144 bytes.
Bodies and attribute values may only hold #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
#x10000-#x10FFFF; SQS rejects anything else as the sender's fault, which would stop the
shard for good.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from botocore.exceptions import ClientError

from processors.sinks.dead_letters import dead_letter_body, dead_letter_id
from processors.sinks.sqs_dead_letters import (
    DeadLetterDeliveryError,
    SqsDeadLetters,
    sqs_json,
    sqs_text,
)
from processors.windowing.engine import DeadLetter
from processors.windowing.records import Position, Record

LIMIT = 262_144
STREAM = "clickstream"
_VALID = re.compile(r"[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


def is_valid_for_sqs(text: str) -> bool:
    return _VALID.fullmatch(text) is not None


def message_size(entry: dict[str, Any]) -> int:
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, attribute in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute["StringValue"].encode())
    return size


class FakeSqs:
    """SendMessageBatch with SQS's checks on sizes and characters."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.messages: list[dict[str, Any]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert 1 <= len(Entries) <= 10
        total = sum(message_size(entry) for entry in Entries)
        if total > LIMIT:
            raise ClientError(
                {
                    "Error": {
                        "Code": "AWS.SimpleQueueService.BatchRequestTooLong",
                        "Message": f"Batch requests cannot be longer than {LIMIT} bytes: {total}",
                    }
                },
                "SendMessageBatch",
            )
        self.batches.append(Entries)
        failed = []
        for entry in Entries:
            values = [a["StringValue"] for a in entry.get("MessageAttributes", {}).values()]
            if not all(is_valid_for_sqs(text) for text in [entry["MessageBody"], *values]):
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": True,
                        "Code": "InvalidMessageContents",
                        "Message": "Invalid characters found",
                    }
                )
            else:
                self.messages.append(entry)
        return {"Successful": [], "Failed": failed}


def letter(
    data: bytes = b"{broken",
    *,
    error: str = "malformed JSON",
    partition_key: str = "pk",
    pipeline: str = "page-views",
    shard_id: str = "shardId-000000000001",
    sequence: int = 1000,
) -> DeadLetter:
    record = Record(shard_id, Position(sequence), partition_key, data, arrival_ms=1_795_000_000)
    return DeadLetter("invalid", error, pipeline, record)


def sink(client: FakeSqs) -> SqsDeadLetters:
    sqs: Any = client
    return SqsDeadLetters(sqs, "https://sqs.test/queue", STREAM, sleep=lambda _: None)


def body_bytes(dead: DeadLetter) -> int:
    return len(sqs_json(dead_letter_body(dead, STREAM)).encode("utf-8"))


def letter_with_body_bytes(target: int, sequence: int) -> DeadLetter:
    """An ASCII dead letter whose encoded body is exactly ``target`` bytes."""
    base = letter(b"", sequence=sequence)
    data_size = (target - body_bytes(base)) // 4 * 3 - 3
    for pad in range(8):
        candidate = letter(b"x" * data_size, partition_key="pk" + "p" * pad, sequence=sequence)
        if body_bytes(candidate) == target:
            return candidate
    raise AssertionError(f"no letter with a body of {target} bytes")


def test_batches_are_limited_by_utf8_bytes_not_characters() -> None:
    """Ten letters of 25,000 characters fit 262,144 characters, but their 2,000-character
    error texts of three-byte characters make them about 290,000 bytes."""
    sent = [letter(b"x" * 17_000, error="€" * 2_000, sequence=n) for n in range(10)]
    chars = sum(len(sqs_json(dead_letter_body(d, STREAM))) for d in sent)
    assert chars < LIMIT < sum(body_bytes(d) for d in sent)

    client = FakeSqs()
    sink(client).send(sent)

    assert len(client.messages) == 10
    assert len(client.batches) == 2
    assert all(sum(message_size(e) for e in batch) <= LIMIT for batch in client.batches)


def test_batches_count_message_attributes() -> None:
    """Two bodies that together are just under the limit, whose attributes take it over."""
    sent = [letter_with_body_bytes(LIMIT // 2 - 5, sequence=n) for n in range(2)]
    assert sum(body_bytes(d) for d in sent) < LIMIT

    client = FakeSqs()
    sink(client).send(sent)

    assert [len(batch) for batch in client.batches] == [1, 1]


def test_a_body_that_fits_alone_is_shrunk_to_make_room_for_its_attributes() -> None:
    dead = letter_with_body_bytes(LIMIT - 20, sequence=7)
    client = FakeSqs()
    sink(client).send([dead])

    (entry,) = client.messages
    assert message_size(entry) <= LIMIT
    body = json.loads(entry["MessageBody"])
    assert body["data_truncated"] is True
    assert body["data_size"] == len(dead.record.data)


def test_an_oversize_letter_fits_with_its_attributes() -> None:
    client = FakeSqs()
    sink(client).send([letter(b"x" * 400_000, error="€" * 2_000)])
    (entry,) = client.messages
    assert message_size(entry) <= LIMIT


def test_noncharacters_in_the_body_are_escaped_and_the_json_is_unchanged() -> None:
    """orjson writes U+FFFE and U+FFFF raw; SQS would reject the message."""
    dead = letter(
        "é\ufffe\uffff€".encode(),
        error="bad byte \ufffe in \uffff field; 😀 \x01",
        partition_key="clé-\ufffe-\uffff-日本",
    )
    client = FakeSqs()
    sink(client).send([dead])

    (entry,) = client.messages
    assert is_valid_for_sqs(entry["MessageBody"])
    assert json.loads(entry["MessageBody"]) == dead_letter_body(dead, STREAM)
    assert "日本" in entry["MessageBody"]  # other text stays as it is


def test_a_lone_surrogate_in_the_error_still_makes_a_valid_body() -> None:
    dead = letter(error="undecodable \udcff byte", partition_key="pk\ufffe")
    client = FakeSqs()
    sink(client).send([dead])

    (entry,) = client.messages
    assert is_valid_for_sqs(entry["MessageBody"])
    assert json.loads(entry["MessageBody"]) == dead_letter_body(dead, STREAM)


def test_attribute_values_are_made_valid() -> None:
    dead = letter(pipeline="page-views\uffff", shard_id="shardId-\ufffe\x00")
    client = FakeSqs()
    sink(client).send([dead])

    (entry,) = client.messages
    attributes = {name: a["StringValue"] for name, a in entry["MessageAttributes"].items()}
    assert attributes == {
        "reason": "invalid",
        "pipeline": "page-views\ufffd",
        "dead_letter_id": "page-views\ufffd:shardId-\ufffd\ufffd:1000:0",
    }
    body = json.loads(entry["MessageBody"])
    assert body["pipeline"] == "page-views\uffff"  # the body keeps the exact text
    assert body["dead_letter_id"] == dead_letter_id(dead)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("\t\n\r ok", "\t\n\r ok"),
        ("\x00\x08\x1f", "\ufffd\ufffd\ufffd"),
        ("\ud7ff\ue000\ufffd", "\ud7ff\ue000\ufffd"),
        ("\ufffe\uffff", "\ufffd\ufffd"),
        ("\ud800\udfff", "\ufffd\ufffd"),
        ("😀\U0010ffff", "😀\U0010ffff"),
    ],
)
def test_sqs_text(text: str, expected: str) -> None:
    assert sqs_text(text) == expected


def test_a_rejected_message_stops_with_a_clear_error() -> None:
    class Rejecting(FakeSqs):
        def send_message_batch(
            self, QueueUrl: str, Entries: list[dict[str, Any]]
        ) -> dict[str, Any]:
            return {
                "Failed": [
                    {"Id": e["Id"], "SenderFault": True, "Code": "InvalidParameterValue"}
                    for e in Entries
                ]
            }

    with pytest.raises(DeadLetterDeliveryError, match="InvalidParameterValue"):
        sink(Rejecting()).send([letter()])
