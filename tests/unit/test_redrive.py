"""``shardflow dead-letters --redrive`` on fakes: what is sent is deleted only once Kinesis
took it, what is still invalid (or cut, or failed) stays, a crash of the redrive itself
never puts a letter twice, and other pipelines' letters are left as they were."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest

from processors.pipeline import Pipeline
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dead_letters import dead_letter_body
from processors.windowing.engine import DeadLetter
from processors.windowing.records import Position, Record
from processors.windowing.redrive_envelope import unwrap
from schemas.page_views import PageView, decode_page_view
from shardflow.cli import main
from shardflow.redrive import VISIBILITY_S, RedriveRefused, redrive
from shardflow.redrive_command import NoPipeline, choose_pipeline
from shardflow.redrive_ledger import SENDING, SENT, MemoryRedriveLedger
from shardflow.redrive_report import RedriveReport
from shardflow.settings import Settings
from tests.unit.fake_producer import FakeProducer

T0 = 1_795_000_000_000


def decode_with_default_page(data: bytes) -> PageView:
    """page-views' schema, "fixed": a missing page is "/unknown"."""
    event = orjson.loads(data)
    if isinstance(event, dict) and "page" not in event:
        data = orjson.dumps({**event, "page": "/unknown"})
    return decode_page_view(data)


FIXED: Pipeline[PageView] = replace(PAGE_VIEWS, decode=decode_with_default_page)


@dataclass
class FakeSqs:
    """A queue with visibility timeouts, on a clock the test moves."""

    now: float = 0.0
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    receives: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def send(self, body: dict[str, Any]) -> str:
        message_id = f"m{next(self._ids)}"
        text = orjson.dumps(body).decode()
        self.messages[message_id] = {"body": text, "visible_at": 0.0, "receipt": None}
        return message_id

    def visible(self) -> list[str]:
        return [mid for mid, m in self.messages.items() if m["visible_at"] <= self.now]

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        out = []
        for message_id in self.visible()[: kwargs["MaxNumberOfMessages"]]:
            message = self.messages[message_id]
            message["visible_at"] = self.now + kwargs["VisibilityTimeout"]
            message["receipt"] = f"{message_id}/{self.receives}"
            out.append(
                {
                    "MessageId": message_id,
                    "ReceiptHandle": message["receipt"],
                    "Body": message["body"],
                }
            )
        return {"Messages": out} if out else {}

    def _by_receipt(self, receipt: str) -> str:
        message_id = receipt.split("/", maxsplit=1)[0]
        assert self.messages[message_id]["receipt"] == receipt, "stale receipt handle"
        return message_id

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        del self.messages[self._by_receipt(ReceiptHandle)]

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[Any]) -> Any:
        assert len(Entries) <= 10
        for entry in Entries:
            message_id = self._by_receipt(entry["ReceiptHandle"])
            self.messages[message_id]["visible_at"] = self.now + entry["VisibilityTimeout"]
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def body(
    sequence: int,
    event: dict[str, Any] | None = None,
    *,
    pipeline: str = "page-views",
    reason: str = "invalid",
) -> dict[str, Any]:
    data = orjson.dumps(event if event is not None else {"event_id": f"e{sequence}", "ts": T0})
    record = Record("shardId-000000000001", Position(sequence), f"key-{sequence}", data, T0)
    return dead_letter_body(DeadLetter(reason, "page is required", pipeline, record), "clicks")


def run(
    sqs: FakeSqs,
    producer: FakeProducer,
    ledger: Any,
    pipeline: Pipeline[Any] = FIXED,
    **kwargs: Any,
) -> RedriveReport:
    return redrive(sqs, "url", pipeline, producer, ledger, clock_ms=lambda: T0, **kwargs)


def test_what_the_fixed_pipeline_accepts_is_sent_and_then_deleted() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    letters = [body(n) for n in range(1, 4)]
    for letter in letters:
        sqs.send(letter)

    report = run(sqs, producer, ledger)
    producer.close()

    assert (report.sent, report.left, report.skipped) == (3, 0, 0)
    assert sqs.messages == {}
    assert len(producer.stored) == 3
    for data, key in producer.puts:
        unwrapped = unwrap(data)
        assert unwrapped is not None
        pipeline, letter_id, original = unwrapped
        letter = next(letter for letter in letters if letter["dead_letter_id"] == letter_id)
        assert pipeline == "page-views"
        assert original == base64.b64decode(letter["data"])
        assert key == letter["partition_key"]
        assert ledger.states[letter_id] == SENT
        assert ledger.positions[letter_id][0].startswith("shardId-")


def test_letters_the_pipeline_still_rejects_stay_in_the_queue_visible() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1))
    sqs.send(body(2, {"event_id": "e2", "ts": T0, "page": "/a"}))  # fine now

    report = run(sqs, producer, ledger, pipeline=PAGE_VIEWS)
    producer.close()

    assert report.sent == 1
    assert [letter for letter, _ in report.still_invalid] == [body(1)["dead_letter_id"]]
    assert "page" in report.still_invalid[0][1]
    assert len(sqs.messages) == 1 and sqs.visible() == list(sqs.messages)
    assert body(1)["dead_letter_id"] not in ledger.states
    assert report.left == 1


def test_a_failed_put_leaves_the_letter_and_a_later_redrive_sends_it() -> None:
    sqs, ledger = FakeSqs(), MemoryRedriveLedger()
    sqs.send(body(1))
    failing = FakeProducer(fail=lambda data: "ProvisionedThroughputExceededException")
    report = run(sqs, failing, ledger)
    failing.close()
    assert report.sent == 0
    assert report.failed == [(body(1)["dead_letter_id"], "ProvisionedThroughputExceededException")]
    assert sqs.visible() == list(sqs.messages) and len(sqs.messages) == 1
    assert ledger.states == {}  # released: not uncertain

    working = FakeProducer()
    assert run(sqs, working, ledger).sent == 1
    working.close()
    assert sqs.messages == {} and len(working.stored) == 1


class CrashAfterPut(MemoryRedriveLedger):
    def mark_sent(self, dead_letter_id: str, shard_id: str, sequence_number: str) -> None:
        raise KeyboardInterrupt  # the process dies between the put and the mark


def test_a_crash_between_put_and_mark_is_not_resent_unless_asked() -> None:
    sqs, producer = FakeSqs(), FakeProducer()
    sqs.send(body(1))
    crashing = CrashAfterPut()
    with pytest.raises(KeyboardInterrupt):
        run(sqs, producer, crashing)
    assert len(producer.stored) == 1
    assert crashing.states == {body(1)["dead_letter_id"]: SENDING}
    assert sqs.visible() == list(sqs.messages)  # given back, not deleted

    ledger = MemoryRedriveLedger(states=dict(crashing.states))
    report = run(sqs, producer, ledger)
    assert report.uncertain == [body(1)["dead_letter_id"]] and report.left == 1
    assert len(producer.stored) == 1 and len(sqs.messages) == 1
    assert any("--resend-uncertain" in line for line in report.lines())

    report = run(sqs, producer, ledger, resend_uncertain=True)
    producer.close()
    assert report.sent == 1 and sqs.messages == {}
    assert len(producer.stored) == 2  # the operator asked for it
    assert ledger.states[body(1)["dead_letter_id"]] == SENT


def test_a_letter_marked_sent_is_deleted_without_being_sent_again() -> None:
    sqs, producer = FakeSqs(), FakeProducer()
    sqs.send(body(1))
    ledger = MemoryRedriveLedger(states={body(1)["dead_letter_id"]: SENT})
    report = run(sqs, producer, ledger)
    producer.close()
    assert (report.already_sent, report.sent, report.left) == (1, 0, 0)
    assert sqs.messages == {} and producer.puts == []


def test_a_letter_twice_in_the_queue_is_sent_once_and_both_copies_deleted() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1))
    sqs.send(body(1))  # the runner sent it twice (dead letters are at least once)
    report = run(sqs, producer, ledger)
    producer.close()
    assert (report.sent, report.duplicates) == (1, 1)
    assert sqs.messages == {} and len(producer.stored) == 1


def test_other_pipelines_and_reasons_are_left_untouched_and_visible() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    others = [
        body(1, pipeline="other-views"),
        body(2, reason="late"),
    ]
    for letter in others:
        sqs.send(letter)
    sqs.messages["junk"] = {"body": "not a dead letter", "visible_at": 0.0, "receipt": None}
    sqs.send(body(3))

    report = run(sqs, producer, ledger)
    producer.close()

    assert (report.sent, report.skipped) == (1, 3)
    assert len(producer.stored) == 1
    left = [orjson.loads(m["body"]) for k, m in sqs.messages.items() if k != "junk"]
    assert sorted(letter["dead_letter_id"] for letter in left) == sorted(
        letter["dead_letter_id"] for letter in others
    )
    assert "junk" in sqs.messages
    assert sqs.visible() == list(sqs.messages)


def test_cut_letters_are_left_and_reported() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send({**body(1), "data_truncated": True})
    report = run(sqs, producer, ledger)
    producer.close()
    assert report.cut == [body(1)["dead_letter_id"]] and report.left == 1
    assert producer.puts == [] and len(sqs.messages) == 1


def test_the_limit_caps_the_letters_handled() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    for n in range(1, 26):
        sqs.send(body(n))
    report = run(sqs, producer, ledger, limit=12)
    producer.close()
    assert report.sent == 12 and len(sqs.messages) == 13
    assert sqs.visible() == list(sqs.messages)


def test_messages_that_come_back_during_a_long_run_are_not_handled_twice() -> None:
    sqs, producer, ledger = FakeSqs(), FakeProducer(), MemoryRedriveLedger()
    sqs.send(body(1, pipeline="other-views"))
    for n in range(2, 25):
        sqs.send(body(n))
    calls = 0

    def slow(report: RedriveReport) -> None:
        nonlocal calls
        calls += 1
        sqs.now += VISIBILITY_S  # every held message is visible again

    report = run(sqs, producer, ledger, progress=slow)
    producer.close()
    assert (report.sent, report.skipped) == (23, 1)
    assert len(producer.stored) == 23 and list(sqs.messages) == ["m0"]
    assert calls == 3


def test_late_letters_are_refused_with_the_reason() -> None:
    with pytest.raises(RedriveRefused, match="final windows never change"):
        run(FakeSqs(), FakeProducer(), MemoryRedriveLedger(), reason="late")


def test_the_summary_says_late_events_come_back_late() -> None:
    lines = RedriveReport("page-views").lines()
    assert any("late dead letter" in line for line in lines)


# -- which pipeline --------------------------------------------------------------------


def test_the_pipeline_is_the_one_using_the_queue_or_the_one_run_by_default() -> None:
    pipelines = [PAGE_VIEWS, DEVICE_SESSIONS]
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


def test_the_command_refuses_late_letters_and_stray_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dead-letters", "--redrive", "--reason", "late"]) == 2
    assert "final windows never change" in capsys.readouterr().err
    assert main(["dead-letters", "--resend-uncertain"]) == 2
    assert "go with --redrive" in capsys.readouterr().err
