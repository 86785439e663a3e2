"""The embedded runner on fakes: it reads every shard, flushes in order, stops when idle,
and refuses to continue when another writer owns newer state."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.sinks.ports import StaleWrite
from processors.windowing.engine import ShardProgress
from processors.windowing.records import Position
from streams.kpl import MAGIC, AggregateBuilder, UserRecord
from streams.runner import EmbeddedRunner, RunnerOptions
from tests.unit.fake_kinesis import FakeKinesis, client_error

FAST = RunnerOptions(
    flush_interval=0.01, poll_interval=0.0, idle_poll_interval=0.01, report_interval=3600
)


def view(ts: int, page: str = "/a", value: float | None = None) -> bytes:
    event: dict[str, object] = {"event_id": str(ts), "ts": ts, "page": page}
    if value is not None:
        event["value"] = value
    return orjson.dumps(event)


def runner_for(
    kinesis: FakeKinesis, store: MemoryPartialStore, dead: MemoryDeadLetters
) -> EmbeddedRunner:
    return EmbeddedRunner(kinesis, store, dead, [PAGE_VIEWS], "stream", FAST)  # type: ignore[arg-type]


def test_reads_every_shard_and_merges_them_on_query() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", view(1_000, value=2.5), view(2_000), b"{broken")
    kinesis.put("s1", view(3_000, value=1.0), view(200_000))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    stats = runner_for(kinesis, store, dead).run(until_idle=0.05)
    assert stats.records == 5 and stats.dead_letters == {"invalid": 1}
    [first, *_] = query_windows(store, PAGE_VIEWS, key="/a")
    assert (first.values["views"], first.values["revenue"], first.shards) == (3, 3.5, 2)
    assert not first.final  # shard s0's watermark (2 s - 10 s) has not reached 60 s
    assert [letter.record.shard_id for letter in dead.letters] == ["s0"]


def test_a_restart_continues_from_the_checkpoint_without_double_counting() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", view(1_000), view(2_000))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    runner_for(kinesis, store, dead).run(until_idle=0.05)
    kinesis.put("s0", view(3_000))
    runner_for(kinesis, store, dead).run(until_idle=0.05)
    assert kinesis.iterator_requests[-1]["StartingSequenceNumber"] == "2"
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.values["views"] == 3
    assert store.read_progress("page-views")[0].checkpoint == Position(3)


def test_throttled_reads_back_off_and_lose_nothing() -> None:
    kinesis = FakeKinesis(faults=["ProvisionedThroughputExceededException"] * 2)
    kinesis.put("s0", view(1_000), view(2_000))
    store = MemoryPartialStore()
    runner_for(kinesis, store, MemoryDeadLetters()).run(until_idle=0.3)
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.values["views"] == 2


def test_a_newer_checkpoint_from_another_writer_stops_the_runner() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", view(1_000))
    store = MemoryPartialStore()
    store.register_shard("page-views", "stream", "s0")
    runner = runner_for(kinesis, store, MemoryDeadLetters())
    # Another worker moved the checkpoint far ahead after this runner loaded its progress.
    original = store.register_shard

    def register_then_race(
        pipeline: str, stream: str, shard_id: str, floor: int | None = None
    ) -> ShardProgress:
        progress = original(pipeline, stream, shard_id, floor)
        store.write_progress(pipeline, stream, ShardProgress(shard_id, Position(99)))
        return progress

    store.register_shard = register_then_race  # type: ignore[method-assign]
    with pytest.raises(StaleWrite):
        runner.run(until_idle=0.05)


def test_a_closed_shard_is_read_to_its_end_and_marked_ended() -> None:
    kinesis = FakeKinesis(closed={"s0"})
    kinesis.put("s0", view(1_000))
    store = MemoryPartialStore()
    runner_for(kinesis, store, MemoryDeadLetters()).run(until_idle=0.05)
    [progress] = store.read_progress("page-views")
    assert progress.ended and progress.checkpoint == Position(1)
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.final  # the only shard ended, so nothing holds the window open


def test_an_end_reported_after_the_last_flush_still_ends_the_shard_and_starts_children() -> None:
    """Kinesis often reports a closed shard's end on a later, empty read: by then every
    record is flushed, and the end must still be recorded so that the children start."""
    kinesis = FakeKinesis(closed={"s0"}, parents={"s1": "s0"}, end_on_empty_read=True)
    kinesis.put("s0", view(1_000))
    kinesis.put("s1", view(2_000), view(3_000))
    store = MemoryPartialStore()
    flush_every_poll = RunnerOptions(
        flush_interval=0.0, poll_interval=0.0, idle_poll_interval=0.01, report_interval=3600
    )
    runner = EmbeddedRunner(
        kinesis,
        store,
        MemoryDeadLetters(),
        [PAGE_VIEWS],
        "stream",  # type: ignore[arg-type]
        flush_every_poll,
    )
    runner.run(until_idle=0.1)
    progress = {p.shard_id: p for p in store.read_progress("page-views")}
    assert progress["s0"].ended and progress["s1"].checkpoint == Position(2)
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.values["views"] == 3
    assert not window.final  # the child is open and its watermark is below the end


def test_an_empty_closed_shard_ends_too() -> None:
    kinesis = FakeKinesis(closed={"s0"}, parents={"s1": "s0"}, shards={"s0": []})
    kinesis.put("s1", view(2_000))
    store = MemoryPartialStore()
    runner_for(kinesis, store, MemoryDeadLetters()).run(until_idle=0.1)
    progress = {p.shard_id: p for p in store.read_progress("page-views")}
    assert progress["s0"].ended and progress["s0"].checkpoint is None
    assert progress["s1"].checkpoint == Position(1)


def test_children_are_registered_before_the_parent_is_marked_ended() -> None:
    kinesis = FakeKinesis(closed={"s0"}, parents={"s1": "s0"})
    kinesis.put("s0", view(1_000))
    kinesis.put("s1", view(2_000))
    store = MemoryPartialStore()
    seen_when_parent_ended: list[set[str]] = []
    original = store.write_progress

    def watch(pipeline: str, stream: str, progress: ShardProgress) -> None:
        if progress.shard_id == "s0" and progress.ended:
            seen_when_parent_ended.append({p.shard_id for p in store.read_progress(pipeline)})
        original(pipeline, stream, progress)

    store.write_progress = watch  # type: ignore[method-assign]
    runner_for(kinesis, store, MemoryDeadLetters()).run(until_idle=0.1)
    assert seen_when_parent_ended == [{"s0", "s1"}]


def test_a_flush_retried_after_a_failure_does_not_send_dead_letters_again() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"{broken", view(1_000))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    original = store.write_rows
    failures = [client_error("ProvisionedThroughputExceededException", "PutItem")]

    def flaky(rows: object) -> None:
        if failures:
            raise failures.pop()
        original(rows)  # type: ignore[arg-type]

    store.write_rows = flaky  # type: ignore[method-assign]
    runner_for(kinesis, store, dead).run(until_idle=0.05)
    assert not failures and len(dead.letters) == 1
    progress = store.read_progress("page-views")[0]
    assert progress.dead_letters_through == Position(2)


# -- KPL aggregates -------------------------------------------------------------------


def aggregate(*events: bytes) -> bytes:
    builder = AggregateBuilder(1 << 20)
    for index, event in enumerate(events):
        assert builder.add(UserRecord(f"user-{index}", None, event))
    return builder.build()


@pytest.mark.parametrize("done", [1, 2, 3])
def test_aggregated_records_count_once_through_a_restart_inside_an_aggregate(done: int) -> None:
    """The first run stops with its checkpoint inside the aggregate at sequence 2, after
    ``done`` of its 4 user records: it reads a shard where that Kinesis record holds only
    those (same sequence number, same first user records), which is then replaced by the
    full aggregate. The restart reads the aggregate again and applies only the rest."""
    events = [view(1_000 + i) for i in range(4)]
    kinesis = FakeKinesis()
    kinesis.put("s0", view(500), aggregate(*events[:done]))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    runner_for(kinesis, store, dead).run(until_idle=0.05)
    assert store.read_progress("page-views")[0].checkpoint == Position(2, done - 1)

    kinesis.shards["s0"][1] = aggregate(*events)
    kinesis.put("s0", aggregate(view(2_000), view(3_000)), view(4_000))
    requests = len(kinesis.iterator_requests)
    stats = runner_for(kinesis, store, dead).run(until_idle=0.05)
    restart = kinesis.iterator_requests[requests]
    assert (restart["ShardIteratorType"], restart["StartingSequenceNumber"]) == (
        "AT_SEQUENCE_NUMBER",
        "2",
    )
    assert stats.records == (4 - done) + 2 + 1
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.values["views"] == 1 + 4 + 2 + 1
    assert store.read_progress("page-views")[0].checkpoint == Position(4)
    assert not dead.letters


def test_a_malformed_aggregate_is_dead_lettered_and_the_shard_goes_on() -> None:
    body = b"\x0a\x01k\x1a\x02\x08\x05"  # an index outside the table, and no data
    kinesis = FakeKinesis()
    kinesis.put("s0", aggregate(view(1_000)), MAGIC + body + hashlib.md5(body).digest())
    kinesis.put("s0", aggregate(view(2_000), view(3_000)))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    stats = runner_for(kinesis, store, dead).run(until_idle=0.05)
    assert stats.dead_letters == {"invalid": 1}
    [letter] = dead.letters
    assert letter.record.position == Position(2)
    [window] = query_windows(store, PAGE_VIEWS)
    assert window.values["views"] == 3
    assert store.read_progress("page-views")[0].checkpoint == Position(3, 1)
