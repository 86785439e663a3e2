"""The embedded runner on fakes: it reads every shard, flushes in order, stops when idle,
and refuses to continue when another writer owns newer state."""

from __future__ import annotations

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.sinks.ports import StaleWrite
from processors.windowing.engine import ShardProgress
from processors.windowing.records import Position
from streams.runner import EmbeddedRunner, RunnerOptions
from tests.unit.fake_kinesis import FakeKinesis

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

    def register_then_race(pipeline: str, stream: str, shard_id: str) -> ShardProgress:
        progress = original(pipeline, stream, shard_id)
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
