"""The dead-letter message body (design.md section 8).

A body is a JSON object with at least ``reason``, ``error``, ``pipeline``, ``shard_id``,
``sequence_number``, ``sub_sequence_number`` and ``data`` (the original bytes, base64),
and must fit in one SQS message (256 KiB).
"""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dead_letters import (
    MAX_BODY_BYTES,
    dead_letter_body,
    dead_letter_id,
    shrink_to_fit,
)
from processors.windowing.engine import DeadLetter, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record

SHARD = "shardId-000000000003"
SEQUENCE = "49590338271490256608559692538361571095921575989136588898"
T0 = 1_795_773_600_000


def letters_for(*payloads: bytes) -> list[DeadLetter]:
    """The dead letters the engine makes for ``payloads`` (one shard, in order)."""
    engine = ShardEngine(PAGE_VIEWS, ShardProgress(SHARD))
    batch = [
        Record(SHARD, Position(int(SEQUENCE) + i, 2), "pk", data, arrival_ms=T0 + 5)
        for i, data in enumerate(payloads)
    ]
    engine.process(batch, lambda keys: [])
    return engine.plan_flush().dead_letters


def test_an_invalid_record_body() -> None:
    (letter,) = letters_for(b"{not json")
    body = dead_letter_body(letter, "clickstream")
    assert body["reason"] == "invalid"
    assert "malformed JSON" in body["error"]
    assert body["pipeline"] == "page-views"
    assert body["stream"] == "clickstream"
    assert body["shard_id"] == SHARD
    assert body["sequence_number"] == SEQUENCE  # all 56 digits, as a string
    assert body["sub_sequence_number"] == 2
    assert body["partition_key"] == "pk"
    assert body["approximate_arrival_ms"] == T0 + 5
    assert base64.b64decode(body["data"]) == b"{not json"
    assert body["dead_letter_id"] == f"page-views:{SHARD}:{SEQUENCE}:2"
    assert "event_time_ms" not in body and "window_start_ms" not in body
    assert orjson.loads(orjson.dumps(body)) == body  # plain JSON


def test_a_late_record_body_names_its_window() -> None:
    late = orjson.dumps({"event_id": "x", "ts": T0, "page": "/a"})
    recent = orjson.dumps({"event_id": "y", "ts": T0 + 300_000, "page": "/a"})
    (letter,) = letters_for(recent, late)
    body = dead_letter_body(letter, "clickstream")
    assert body["reason"] == "late"
    assert body["event_time_ms"] == T0
    assert (body["window_start_ms"], body["window_end_ms"]) == (T0, T0 + 60_000)
    assert body["sequence_number"] == str(int(SEQUENCE) + 1)
    assert base64.b64decode(body["data"]) == late


def test_the_id_is_stable_across_deliveries() -> None:
    """The same record dead-lettered twice (a replay) has the same id."""
    (first,) = letters_for(b"[]")
    (second,) = letters_for(b"[]")
    assert first is not second
    assert dead_letter_id(first) == dead_letter_id(second)


@pytest.mark.parametrize("size", [300_000, 1_048_576])
def test_an_oversize_body_keeps_a_prefix_and_says_so(size: int) -> None:
    data = orjson.dumps({"event_id": "x", "ts": 1, "page": "/", "pad": "A" * size, "value": "1"})
    (letter,) = letters_for(data)
    body = dead_letter_body(letter, "clickstream")
    encoded = orjson.dumps(body)
    assert len(encoded) > MAX_BODY_BYTES

    shrunk = shrink_to_fit(body, len(encoded))
    assert len(orjson.dumps(shrunk)) <= MAX_BODY_BYTES
    kept = base64.b64decode(shrunk["data"])
    assert kept and data.startswith(kept)
    assert shrunk["data_truncated"] is True
    assert shrunk["data_size"] == len(data)
    assert shrunk["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert shrunk["sequence_number"] == body["sequence_number"]


def test_an_error_that_echoes_a_huge_field_still_fits() -> None:
    """A bad 900 KB ``ts`` string must not make the error (and so the body) too large for
    SQS: such a dead letter could never be delivered and would stop the shard."""
    data = orjson.dumps({"event_id": "x", "page": "/", "ts": "A" * 900_000})
    (letter,) = letters_for(data)
    body = dead_letter_body(letter, "clickstream")
    encoded = orjson.dumps(body)
    size = len(orjson.dumps(shrink_to_fit(body, len(encoded))))
    assert size <= MAX_BODY_BYTES
