"""One contract for dead-letter sinks: every letter delivered, with the body design.md
section 8 lists; the SQS sink batches by 10, keeps oversized bodies under the limit, and
sends text SQS would otherwise reject (U+FFFE, U+FFFF) so that the JSON is unchanged."""

from __future__ import annotations

import base64
import json
import re

import pytest

from processors.sinks.dead_letters import MAX_BODY_BYTES, dead_letter_body
from processors.sinks.memory import MemoryDeadLetters
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from processors.windowing.engine import DeadLetter
from processors.windowing.records import Position, Record
from processors.windowing.windows import Window
from tests.conftest import Emulator, make_aws_env
from tests.oracle import drain_queue

NOT_FOR_SQS = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters SQS rejects in a message body (moto does not check; SQS and LocalStack do)."""


def letters(count: int) -> list[DeadLetter]:
    out = []
    for index in range(count):
        record = Record(
            "shardId-000000000001",
            Position(1000 + index),
            f"pk{index}",
            b"{broken" + str(index).encode(),
            arrival_ms=1_795_000_000_000,
        )
        if index % 2:
            out.append(DeadLetter("late", "too late", "page-views", record, 5, Window(0, 60_000)))
        else:
            out.append(DeadLetter("invalid", "malformed JSON", "page-views", record))
    return out


def test_memory_sink_keeps_every_letter() -> None:
    sink = MemoryDeadLetters()
    sink.send(letters(23))
    assert len(sink.letters) == 23


def test_body_has_the_documented_fields() -> None:
    body = dead_letter_body(letters(2)[1], "clickstream")
    assert body["reason"] == "late" and body["error"] == "too late"
    assert body["pipeline"] == "page-views" and body["shard_id"] == "shardId-000000000001"
    assert (body["sequence_number"], body["sub_sequence_number"]) == ("1001", 0)
    assert base64.b64decode(body["data"]) == b"{broken1"
    assert (body["window_start_ms"], body["window_end_ms"]) == (0, 60_000)


@pytest.mark.emulator
def test_sqs_sink_delivers_every_letter(emulator: Emulator) -> None:
    aws = make_aws_env(emulator, shards=1)
    sink = SqsDeadLetters(aws.clients.sqs, aws.queue_url, aws.settings.stream)
    sent = letters(23)
    huge = Record("shardId-000000000000", Position(7), "pk", b"x" * 400_000)
    sent.append(DeadLetter("invalid", "malformed JSON", "page-views", huge))
    sink.send(sent)
    bodies = drain_queue(aws.clients.sqs, aws.queue_url)
    assert sorted(b["dead_letter_id"] for b in bodies) == sorted(
        f"page-views:{letter.record.shard_id}:{letter.record.position.sequence}:0"
        for letter in sent
    )
    big = next(b for b in bodies if b["sequence_number"] == "7")
    assert big["data_truncated"] is True and big["data_size"] == 400_000
    assert len(json.dumps(big)) <= MAX_BODY_BYTES


@pytest.mark.emulator
def test_sqs_sink_delivers_noncharacters_and_non_ascii_text(emulator: Emulator) -> None:
    """orjson writes U+FFFE raw, and SQS rejects it: the shard would stop for good."""
    aws = make_aws_env(emulator, shards=1)
    sink = SqsDeadLetters(aws.clients.sqs, aws.queue_url, aws.settings.stream)
    data = '{"page": "/caf\u00e9-\ufffe-\u65e5\u672c", "bad": "\uffff"}'.encode()
    record = Record("shardId-000000000000", Position(42), "cl\u00e9-\ufffe-\u65e5\u672c", data)
    letter = DeadLetter("invalid", "page: bad text \ufffe \u00e9", "page-views", record)
    sink.send([letter])

    response = aws.clients.sqs.receive_message(
        QueueUrl=aws.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    (message,) = response["Messages"]
    assert not NOT_FOR_SQS.search(message["Body"])
    body = json.loads(message["Body"])
    assert body == dead_letter_body(letter, aws.settings.stream)
    assert body["partition_key"] == "cl\u00e9-\ufffe-\u65e5\u672c"
    assert base64.b64decode(body["data"]) == data
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes == {
        "reason": "invalid",
        "pipeline": "page-views",
        "dead_letter_id": "page-views:shardId-000000000000:42:0",
    }
