"""Redrive letter by letter, on fakes: one letter failing in any way (a decoder bug, a put
without an answer, a producer that closes) leaves it and not the others; a letter holding
a whole KPL aggregate is redriven record by record."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import orjson
import pytest

from processors.pipeline import Pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.redrive_envelope import unwrap
from schemas.page_views import PageView
from shardflow import redrive_letters
from shardflow.redrive_ledger import SENDING, SENT, MemoryRedriveLedger
from streams.kpl import MAGIC as KPL_MAGIC
from streams.kpl import AggregateBuilder, UserRecord
from streams.producer_api import ProducerClosed, PutResult
from tests.unit.fake_producer import FakeProducer
from tests.unit.redrive_fakes import T0, FakeSqs, body, closed, decode_with_default_page, run


def letter_id(sequence: int) -> str:
    return str(body(sequence)["dead_letter_id"])


# -- errors, letter by letter ---------------------------------------------------------


def decode_or_crash(data: bytes) -> PageView:
    if b'"e2"' in data:
        raise KeyError("page")  # a decoder bug, not an InvalidEvent
    return decode_with_default_page(data)


def test_a_decoder_crashing_on_one_letter_leaves_it_and_sends_the_others() -> None:
    crashy: Pipeline[PageView] = replace(PAGE_VIEWS, decode=decode_or_crash)
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in (1, 2, 3):
        sqs.send(body(n))
    report = run(sqs, producer, ledger, pipeline=crashy)
    closed(producer)
    assert report.sent == 2
    assert report.errors == [(letter_id(2), "decoding raised KeyError: 'page'")]
    assert [b["dead_letter_id"] for b in sqs.bodies()] == [letter_id(2)]
    assert report.exit_code == 1


class ScriptedProducer:
    """Answers each put with the future the test gives."""

    def __init__(self, answers: list[Future[PutResult] | Exception]) -> None:
        self.answers = answers
        self.puts: list[bytes] = []

    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.puts.append(data)
        return answer


def resolved() -> Future[PutResult]:
    future: Future[PutResult] = Future()
    future.set_result(PutResult("shardId-000000000000", "4900", 0))
    return future


def test_each_put_has_its_own_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redrive_letters, "PUT_TIMEOUT_S", 0.3)
    monkeypatch.setattr(redrive_letters, "WAIT_SLICE_S", 0.05)
    never: Future[PutResult] = Future()
    late: Future[PutResult] = Future()  # answers after the first put's timeout ran out
    timer = threading.Timer(0.4, lambda: late.set_result(PutResult("shardId-000000000001", "5", 0)))
    timer.start()
    sqs, ledger = FakeSqs(), MemoryRedriveLedger()
    for n in (1, 2, 3):
        sqs.send(body(n))
    report = run(sqs, ScriptedProducer([never, late, resolved()]), ledger)
    timer.join()
    assert report.sent == 2
    assert report.failed == [(letter_id(1), "no answer from Kinesis within 0.3 s")]
    assert ledger.states[letter_id(1)] == SENDING  # resent by the next run
    assert [b["dead_letter_id"] for b in sqs.bodies()] == [letter_id(1)]


def test_puts_made_before_the_producer_fails_are_waited_for_and_deleted() -> None:
    sqs, ledger = FakeSqs(), MemoryRedriveLedger()
    for n in (1, 2, 3):
        sqs.send(body(n))
    producer = ScriptedProducer([resolved(), ProducerClosed("closed")])
    with pytest.raises(ProducerClosed):
        run(sqs, producer, ledger)
    assert ledger.states == {letter_id(1): SENT, letter_id(2): SENDING}
    assert sorted(b["dead_letter_id"] for b in sqs.bodies()) == sorted([letter_id(2), letter_id(3)])
    assert sqs.visible() == list(sqs.messages)


# -- KPL aggregates ------------------------------------------------------------------


def aggregate(*records: tuple[str, dict[str, Any]]) -> bytes:
    builder = AggregateBuilder(1 << 20)
    for key, event in records:
        assert builder.add(UserRecord(key, None, orjson.dumps(event)))
    return builder.build()


def test_a_letter_holding_a_kpl_aggregate_is_redriven_record_by_record() -> None:
    data = aggregate(("u-a", {"event_id": "a", "ts": T0}), ("u-b", {"event_id": "b", "ts": T0}))
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, data=data))
    report = run(sqs, producer, ledger)
    closed(producer)
    assert (report.sent, report.left, sqs.messages) == (2, 0, {})
    sent = [(unwrap(data), key) for data, key in producer.puts]
    assert [(u[1], orjson.loads(u[2])["event_id"], key) for u, key in sent if u] == [
        (f"{letter_id(1)}/0", "a", "u-a"),
        (f"{letter_id(1)}/1", "b", "u-b"),
    ]


def test_an_aggregate_with_a_record_still_invalid_stays_until_all_are_sent() -> None:
    data = aggregate(("u-a", {"event_id": "a", "ts": T0}), ("u-b", {"event_id": "b"}))
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, data=data))
    report = run(sqs, producer, ledger)
    assert report.sent == 1 and [i for i, _ in report.still_invalid] == [f"{letter_id(1)}/1"]
    assert len(sqs.messages) == 1
    again = run(sqs, producer, ledger)  # the sent record is not put twice
    closed(producer)
    assert (again.sent, again.already_sent, len(again.still_invalid)) == (0, 1, 1)
    assert len(producer.puts) == 1


def test_a_malformed_aggregate_is_still_invalid() -> None:
    empty = KPL_MAGIC + hashlib.md5(b"").digest()  # magic and MD5 match, no user record
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, data=empty))
    report = run(sqs, producer, ledger)
    closed(producer)
    [(_, why)] = report.still_invalid
    assert why.startswith("malformed KPL aggregate") and producer.puts == []
