"""A redrive run against the queue, on fakes: held letters stay hidden however long the run
lasts, other letters are given back at once and received at most twice, the run ends on a
queue that keeps filling, and it says (exit 1) when letters may be left unexamined."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from shardflow import redrive_letters
from shardflow.redrive_ledger import MemoryRedriveLedger
from shardflow.redrive_queue import VISIBILITY_S, WAIT_S
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import REFRESH_S, Placement, PlacementUnavailable
from streams.producer_api import PutResult
from tests.unit.fake_producer import FakeProducer
from tests.unit.redrive_fakes import T0, FakeSqs, body, closed, placement, run


def pageless(n: int) -> dict[str, object]:
    return body(n)  # no page: invalid for the shipped page-views


def with_page(n: int) -> dict[str, object]:
    return body(n, {"event_id": f"e{n}", "ts": T0, "page": "/a"})


def test_held_letters_stay_hidden_however_long_the_run_lasts() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in range(1, 16):
        sqs.send(pageless(n))
    for n in range(16, 46):
        sqs.send(with_page(n))

    def slow(report: RedriveReport) -> None:
        sqs.now += VISIBILITY_S - 10  # each receive's letters take almost a whole hold

    report = run(sqs, producer, ledger, pipeline=PAGE_VIEWS, progress=slow)
    closed(producer)
    assert (report.sent, len(report.still_invalid), report.unexamined) == (30, 15, 0)
    assert all(m["receive_count"] == 1 for m in sqs.messages.values())  # never came back
    assert (next(iter(sqs.messages)), VISIBILITY_S) in sqs.visibility_changes
    assert sqs.visible() == list(sqs.messages) and report.exit_code == 1


def test_messages_whose_hold_ran_out_are_not_handled_twice() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, pipeline="other-views"))
    for n in range(2, 25):
        sqs.send(body(n))

    def stalled(report: RedriveReport) -> None:
        sqs.now += VISIBILITY_S + 1  # every held message is visible again

    report = run(sqs, producer, ledger, progress=stalled)
    closed(producer)
    assert (report.sent, report.skipped, report.exit_code) == (23, 1, 0)
    assert len(producer.stored) == 23 and list(sqs.messages) == ["m0"]


def test_holds_are_extended_while_puts_are_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redrive_letters, "WAIT_SLICE_S", 0.02)
    sqs, ledger = FakeSqs(), MemoryRedriveLedger()
    sqs.send(pageless(1))  # held all run
    sqs.send(with_page(2))
    answer: Future[PutResult] = Future()
    extended_before_answer: list[int] = []

    class SlowProducer:
        def put(self, data: bytes, key: str, **kwargs: object) -> Future[PutResult]:
            threading.Timer(0.05, setattr, (sqs, "now", VISIBILITY_S - 5.0)).start()
            threading.Timer(0.3, answer.set_result, (PutResult("shardId-0", "1", 0),)).start()
            answer.add_done_callback(
                lambda _: extended_before_answer.append(len(sqs.visibility_changes))
            )
            return answer

    report = run(sqs, SlowProducer(), ledger, pipeline=PAGE_VIEWS)
    assert report.sent == 1 and extended_before_answer[0] >= 1
    assert sqs.messages["m0"]["receive_count"] == 1


def test_other_letters_are_given_back_at_once_and_received_at_most_twice() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in range(1, 26):
        sqs.send(body(n, pipeline="other-views"))
    sqs.messages["junk"] = {
        "body": "no letter",
        "visible_at": 0.0,
        "receipt": None,
        "receive_count": 0,
    }
    for n in range(26, 31):
        sqs.send(body(n))
    visible_during_run: list[set[str]] = []

    def look(report: RedriveReport) -> None:
        visible_during_run.append(set(sqs.visible()))

    report = run(sqs, producer, ledger, progress=look)
    closed(producer)
    assert (report.sent, report.skipped, report.exit_code) == (5, 26, 0)
    assert len(sqs.messages) == 26 and sqs.visible() == list(sqs.messages)
    assert max(m["receive_count"] for m in sqs.messages.values()) == 2
    # Messages received once and given back were visible to others while the run went on.
    assert {"m20", "m21", "m22", "m23", "m24", "junk"} <= visible_during_run[0]


def test_quiet_receives_long_poll_and_end_the_run() -> None:
    sqs = FakeSqs()
    sqs.send(body(1))
    report = run(sqs, FakeProducer(), MemoryRedriveLedger())
    waits = [receive["WaitTimeSeconds"] for receive in sqs.receives]
    assert waits == [0, 0, WAIT_S, WAIT_S]  # one with a letter, then three quiet ones
    assert report.sent == 1


def test_a_queue_that_keeps_filling_ends_the_run_and_says_so() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    numbers = iter(range(1, 10_000))
    for _ in range(5):
        sqs.send(body(next(numbers)))

    def fill(queue: FakeSqs) -> None:
        for _ in range(10):
            queue.send(body(next(numbers), pipeline="other-views"))
            queue.send(body(next(numbers)))

    sqs.on_receive = fill
    report = run(sqs, producer, ledger)
    closed(producer)
    assert report.examined <= 5 + 100 + 10 and len(sqs.receives) <= 30
    assert report.stopped is not None and "fills" in report.stopped
    assert report.exit_code == 1 and any("not finished" in line for line in report.lines())
    assert sqs.visible() == list(sqs.messages)


def test_messages_the_run_never_saw_make_it_exit_1() -> None:
    sqs, producer, ledger = FakeSqs(unreachable=3), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1))
    report = run(sqs, producer, ledger)
    closed(producer)
    assert (report.sent, report.left, report.unexamined, report.exit_code) == (1, 0, 3, 1)
    assert any("3 more messages than this run saw" in line for line in report.lines())


def test_the_limit_caps_the_letters_handled_and_says_more_may_wait() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in range(1, 26):
        sqs.send(body(n))
    report = run(sqs, producer, ledger, limit=12)
    closed(producer)
    assert report.sent == 12 and len(sqs.messages) == 13
    assert sqs.visible() == list(sqs.messages)
    assert report.stopped == "stopped at --limit 12: more letters may be waiting"
    assert report.exit_code == 1


def test_progress_unreadable_during_the_run_stops_it() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in range(1, 16):
        sqs.send(body(n))
    loads = 0

    def flaky() -> Placement:
        nonlocal loads
        loads += 1
        if loads > 1:
            raise PlacementUnavailable("cannot read page-views's shard progress: throttled")
        return placement()()

    def slow(report: RedriveReport) -> None:
        sqs.now += REFRESH_S

    report = run(sqs, producer, ledger, where=flaky, progress=slow)
    closed(producer)
    assert report.sent == 10 and len(sqs.messages) == 5
    assert report.stopped is not None and "throttled" in report.stopped
    assert report.exit_code == 1 and sqs.visible() == list(sqs.messages)
