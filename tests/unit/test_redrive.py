"""``shardflow dead-letters --redrive`` on fakes, letter by letter: what is sent is deleted
only once Kinesis took it; what is still invalid, cut, or whose windows are final stays;
a put without a clear outcome is resent by the next run; one bad letter does not stop the
others (more of that, and KPL aggregates: test_redrive_letters.py; the queue side, long
and bounded runs: test_redrive_run.py)."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from processors.pipeline import Pipeline
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.engine import ShardProgress
from processors.windowing.records import Position
from processors.windowing.redrive_envelope import unwrap
from shardflow.cli import main
from shardflow.redrive import RedriveRefused, redrive
from shardflow.redrive_command import NoPipeline, choose_pipeline
from shardflow.redrive_ledger import SENDING, SENT, MemoryRedriveLedger
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import Placement, PlacementUnavailable
from shardflow.settings import Settings
from tests.unit.fake_producer import FakeProducer
from tests.unit.redrive_fakes import (
    FIXED,
    T0,
    TWO_SHARDS,
    FakeSqs,
    body,
    closed,
    placement,
    run,
)


def letter_id(sequence: int) -> str:
    return str(body(sequence)["dead_letter_id"])


def test_what_the_fixed_pipeline_accepts_is_sent_and_then_deleted() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    letters = [body(n) for n in range(1, 4)]
    for letter in letters:
        sqs.send(letter)

    report = run(sqs, producer, ledger)
    closed(producer)

    assert (report.sent, report.left, report.skipped, report.exit_code) == (3, 0, 0, 0)
    assert sqs.messages == {}
    assert len(producer.stored) == 3
    for data, key in producer.puts:
        unwrapped = unwrap(data)
        assert unwrapped is not None
        pipeline, dead_letter_id, original = unwrapped
        letter = next(letter for letter in letters if letter["dead_letter_id"] == dead_letter_id)
        assert pipeline == "page-views"
        assert original == base64.b64decode(letter["data"])
        assert key == letter["partition_key"]
        assert ledger.states[dead_letter_id] == SENT
        assert ledger.positions[dead_letter_id][0].startswith("shardId-")


def test_letters_the_pipeline_still_rejects_stay_in_the_queue_visible() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1))
    sqs.send(body(2, {"event_id": "e2", "ts": T0, "page": "/a"}))  # fine now

    report = run(sqs, producer, ledger, pipeline=PAGE_VIEWS)
    closed(producer)

    assert report.sent == 1
    assert [letter for letter, _ in report.still_invalid] == [letter_id(1)]
    assert "page" in report.still_invalid[0][1]
    assert len(sqs.messages) == 1 and sqs.visible() == list(sqs.messages)
    assert letter_id(1) not in ledger.states
    assert (report.left, report.exit_code) == (1, 1)


def test_a_failed_put_leaves_the_letter_and_its_claim_and_the_next_run_resends_it() -> None:
    sqs, ledger = FakeSqs(), MemoryRedriveLedger()
    sqs.send(body(1))
    failing = FakeProducer(fail=lambda data: "ProvisionedThroughputExceededException")
    report = run(sqs, failing, ledger)
    closed(failing)
    assert report.sent == 0 and report.exit_code == 1
    assert report.failed == [(letter_id(1), "ProvisionedThroughputExceededException")]
    assert sqs.visible() == list(sqs.messages) and len(sqs.messages) == 1
    assert ledger.states == {letter_id(1): SENDING}  # it may be in the stream: kept

    working = FakeProducer()
    again = run(sqs, working, ledger)
    closed(working)
    assert (again.sent, again.resent, again.exit_code) == (1, 1, 0)
    assert sqs.messages == {} and len(working.stored) == 1


class CrashAfterPut(MemoryRedriveLedger):
    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        raise KeyboardInterrupt  # the process dies between the put and the mark


def test_after_a_crash_between_put_and_mark_the_next_run_sends_it_again() -> None:
    sqs, producer = FakeSqs(), FakeProducer()
    sqs.send(body(1))
    crashing = CrashAfterPut()
    with pytest.raises(KeyboardInterrupt):
        run(sqs, producer, crashing)
    assert len(producer.stored) == 1
    assert crashing.states == {letter_id(1): SENDING}
    assert sqs.visible() == list(sqs.messages)  # given back, not deleted

    ledger = MemoryRedriveLedger(states=dict(crashing.states))
    report = run(sqs, producer, ledger)
    closed(producer)
    # The stream holds two copies under one dead letter id: the pipeline counts one.
    assert (report.sent, report.resent, report.left) == (1, 1, 0)
    assert [unwrap(data) for data, _, _ in producer.stored].count(unwrap(producer.puts[0][0])) == 2
    assert sqs.messages == {} and ledger.states[letter_id(1)] == SENT
    assert not any("uncertain" in line for line in report.lines())


def test_a_letter_marked_sent_is_deleted_without_being_sent_again() -> None:
    sqs, producer = FakeSqs(), FakeProducer()
    sqs.send(body(1))
    ledger = MemoryRedriveLedger(states={letter_id(1): SENT})
    report = run(sqs, producer, ledger)
    closed(producer)
    assert (report.already_sent, report.sent, report.left, report.exit_code) == (1, 0, 0, 0)
    assert sqs.messages == {} and producer.puts == []


def test_a_letter_twice_in_one_receive_is_sent_once_and_both_copies_deleted() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1))
    sqs.send(body(1))  # the runner sent it twice (dead letters are at least once)
    report = run(sqs, producer, ledger)
    closed(producer)
    assert (report.sent, report.duplicates, report.already_sent) == (1, 1, 0)
    assert sqs.messages == {} and len(producer.stored) == 1


def test_a_copy_met_later_in_the_run_is_a_duplicate_not_an_interrupted_send() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(11, {"event_id": "e11"}))  # no time: still invalid
    for n in range(1, 10):
        sqs.send(body(n))
    # The second receive: copies of letters the first one handled, and one more letter.
    sqs.send(body(1))
    sqs.send(body(11, {"event_id": "e11"}))
    sqs.send(body(10))
    report = run(sqs, producer, ledger)
    closed(producer)
    assert (report.sent, report.duplicates, report.already_sent) == (10, 1, 0)
    assert report.copies_left == 1 and report.left == 1
    assert not any(line.startswith("already sent") and "(" in line for line in report.lines())
    assert len(producer.stored) == 10 and len(sqs.messages) == 2


def test_cut_letters_are_left_and_reported() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send({**body(1), "data_truncated": True})
    report = run(sqs, producer, ledger)
    closed(producer)
    assert report.cut == [letter_id(1)] and report.left == 1
    assert producer.puts == [] and len(sqs.messages) == 1


# -- windows already final ---------------------------------------------------------------


def landing_of(key: str, where: Any = None) -> str:
    return (where or placement())().landing(key).shard_id


def test_a_letter_whose_window_is_final_on_its_shard_stays_and_says_why() -> None:
    keys = [f"key-{n}" for n in range(1, 40)]
    on_zero = next(k for k in keys if landing_of(k) == "shardId-000000000000")
    on_one = next(k for k in keys if landing_of(k) == "shardId-000000000001")
    # Shard 0 has seen events a minute after T0: T0's window [T0 - 20 s, T0 + 40 s) is
    # final there with page-views' 10 s of lateness. Shard 1 is still in it.
    progress = [
        ShardProgress("shardId-000000000000", Position(7), max_event_time=T0 + 60_000),
        ShardProgress("shardId-000000000001", Position(9), max_event_time=T0 + 5_000),
    ]
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, key=on_zero))
    sqs.send(body(2, key=on_one))

    report = run(sqs, producer, ledger, where=placement(progress))
    closed(producer)

    assert report.sent == 1 and [key for _, key in producer.puts] == [on_one]
    [(final_id, why)] = report.final
    assert final_id == letter_id(1)
    assert "window already final (would come back late)" in why
    assert f"[{T0 - 20_000}, {T0 + 40_000})" in why and "shardId-000000000000" in why
    assert [b["dead_letter_id"] for b in sqs.bodies()] == [letter_id(1)]
    assert sqs.visible() == list(sqs.messages)
    assert letter_id(1) not in ledger.states  # never claimed
    assert (report.left, report.exit_code) == (1, 1)
    summary = "\n".join(report.lines())
    assert "final windows never change" in summary and "10 s of lateness" in summary


def test_a_final_letter_the_ledger_has_as_sent_is_deleted() -> None:
    progress = [
        ShardProgress(f"shardId-00000000000{n}", max_event_time=T0 + 60_000) for n in (0, 1)
    ]
    sqs, producer = FakeSqs(), FakeProducer()
    sqs.send(body(1))
    ledger = MemoryRedriveLedger(states={letter_id(1): SENT})
    report = run(sqs, producer, ledger, where=placement(progress))
    closed(producer)
    assert (report.already_sent, report.left, sqs.messages) == (1, 0, {})


def test_where_a_record_lands_and_the_watermark_it_meets() -> None:
    idle = ShardProgress("shardId-000000000000", max_event_time=T0, idle_since_ms=1)
    busy = ShardProgress("shardId-000000000001", max_event_time=T0 + 60_000)
    where = Placement(TWO_SHARDS, [idle, busy], 10_000)
    # An idle shard is lifted to the final frontier (here busy's watermark) when it wakes.
    assert where.landing("", str(0)).watermark == T0 + 50_000
    assert where.landing("", str(2**127 + 5)).watermark == T0 + 50_000
    # A shard not registered yet: a child starts at the frontier, a shard without parents
    # at nothing.
    child = [TWO_SHARDS[0], {**TWO_SHARDS[1], "ParentShardId": "shardId-000000000009"}]
    assert Placement(child, [idle], 10_000).landing("", str(2**127 + 5)).watermark == T0 - 10_000
    assert Placement(TWO_SHARDS, [idle], 10_000).landing("", str(2**127 + 5)).watermark is None
    assert Placement(TWO_SHARDS, [], 10_000).landing("k").watermark is None


def test_unreadable_progress_stops_the_redrive_before_it_touches_the_queue() -> None:
    def broken() -> Placement:
        raise PlacementUnavailable("cannot read page-views's shard progress: AccessDenied")

    sqs = FakeSqs()
    sqs.send(body(1))
    with pytest.raises(PlacementUnavailable, match="AccessDenied"):
        run(sqs, FakeProducer(), MemoryRedriveLedger(), where=broken)
    assert sqs.receives == [] and sqs.visible() == list(sqs.messages)


# -- refusals and the command --------------------------------------------------------


def test_late_letters_and_fifo_queues_are_refused_before_anything_is_touched() -> None:
    sqs = FakeSqs()
    with pytest.raises(RedriveRefused, match="final windows never change"):
        run(sqs, FakeProducer(), MemoryRedriveLedger(), reason="late")
    with pytest.raises(RedriveRefused, match="FIFO dead-letter queues are not supported"):
        redrive(
            sqs,
            "https://sqs/1/dead.fifo",
            FIXED,
            FakeProducer(),
            MemoryRedriveLedger(),
            placement(),
        )
    assert sqs.receives == []


def test_the_summary_says_what_redrive_recovers() -> None:
    lines = RedriveReport("page-views", allowed_lateness_ms=10_000).lines()
    assert any("windows are still open" in line for line in lines)


def test_the_pipeline_is_the_one_using_the_queue_or_the_one_run_by_default() -> None:
    pipelines: list[Pipeline[Any]] = [PAGE_VIEWS, DEVICE_SESSIONS]
    assert choose_pipeline(Settings(), pipelines, None) is PAGE_VIEWS
    assert choose_pipeline(Settings(), pipelines, "device-sessions") is DEVICE_SESSIONS
    own = replace(PAGE_VIEWS, sinks=replace(PAGE_VIEWS.sinks, dead_letter_queue="own"))
    assert choose_pipeline(Settings(), [own, DEVICE_SESSIONS], None) is DEVICE_SESSIONS


def test_an_ambiguous_or_unused_queue_asks_for_the_pipeline() -> None:
    twin = replace(PAGE_VIEWS, name="twin-views")
    with pytest.raises(NoPipeline, match="--pipeline"):
        choose_pipeline(Settings(), [PAGE_VIEWS, twin], None)
    own = replace(PAGE_VIEWS, sinks=replace(PAGE_VIEWS.sinks, dead_letter_queue="own"))
    with pytest.raises(NoPipeline, match="no pipeline"):
        choose_pipeline(Settings(), [own], None)


def test_the_command_refuses_late_letters_fifo_queues_and_stray_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dead-letters", "--redrive", "--reason", "late"]) == 2
    assert "final windows never change" in capsys.readouterr().err
    assert main(["--dead-letter-queue", "dead.fifo", "dead-letters", "--redrive"]) == 2
    assert "FIFO" in capsys.readouterr().err
    assert main(["dead-letters", "--pipeline", "page-views"]) == 2
    assert "goes with --redrive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["dead-letters", "--redrive", "--resend-uncertain"])
    assert exited.value.code == 2
