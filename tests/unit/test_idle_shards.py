"""Idle shards: a shard that has sent nothing for the pipeline's ``idle_timeout_ms`` holds
no window open, and what became final without it stays final when it sends again.

The story: the final frontier over shards in every state; the engine marking a shard
idle and waking it with its watermark lifted; replays that decide the same whatever the
crash points; and the runner doing it on fakes with a real clock.
"""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.windowing.engine import REASON_LATE, FlushPlan, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.redrive_envelope import wrap
from processors.windowing.results import EVERYTHING, final_frontier, is_final
from processors.windowing.windows import Window
from streams import shard_work
from streams.runner import EmbeddedRunner, RunnerOptions
from tests.unit.fake_kinesis import FakeKinesis
from tests.unit.test_engine import (
    CRASHES,
    MINUTE,
    NAME,
    SHARD,
    STREAM,
    Crash,
    flush,
    loader,
    new_engine,
    outcome,
    shard_records,
)

LATENESS = PAGE_VIEWS.allowed_lateness_ms


def shard(
    name: str, max_ts: int | None, *, idle: bool = False, ended: bool = False
) -> ShardProgress:
    return ShardProgress(
        name, max_event_time=max_ts, idle_since_ms=1 if idle else None, ended=ended
    )


# -- the final frontier -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shards", "frontier"),
    [
        ([], None),
        ([shard("a", 100_000), shard("b", 70_000)], 60_000),  # the slowest active shard
        ([shard("a", 100_000), shard("b", None)], None),  # an active shard with no events yet
        ([shard("a", 100_000), shard("b", 20_000, idle=True)], 90_000),  # idle: ignored
        ([shard("a", 100_000), shard("b", None, idle=True)], 90_000),
        ([shard("a", 100_000, idle=True), shard("b", 20_000, idle=True)], 90_000),  # all idle
        ([shard("a", None, idle=True)], None),  # idle, but never sent anything
        ([shard("a", 100_000, ended=True), shard("b", 50_000)], 40_000),
        ([shard("a", 100_000, ended=True)], EVERYTHING),
        ([shard("a", 5_000, ended=True), shard("b", 80_000, idle=True)], 70_000),
    ],
)
def test_the_final_frontier(shards: list[ShardProgress], frontier: int | None) -> None:
    assert final_frontier(shards, LATENESS) == frontier


def test_a_quiet_shard_no_longer_holds_a_window_open_once_idle() -> None:
    window = Window(0, MINUTE)
    busy, quiet = shard("a", 5 * MINUTE), shard("b", 1_000)
    assert not is_final(window, [busy, quiet], LATENESS)
    assert is_final(window, [busy, replace(quiet, idle_since_ms=123)], LATENESS)


# -- the engine ---------------------------------------------------------------------------


def view(seq: int, ts: int, page: str = "/a") -> Record:
    data = orjson.dumps({"event_id": f"e{seq}", "ts": ts, "page": page})
    return Record(SHARD, Position(seq), "pk", data)


def durably(engine: ShardEngine, store: MemoryPartialStore, plan: FlushPlan) -> None:
    assert plan.progress is not None
    store.write_progress(NAME, STREAM, plan.progress)
    engine.confirm_flush(plan)


def test_a_shard_is_marked_idle_only_once_everything_it_applied_is_durable() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process([view(1, 1_000)], loader(store))
    with pytest.raises(RuntimeError, match="flush before"):
        engine.plan_idle(now_ms=5)
    flush(engine, store, letters)
    durably(engine, store, engine.plan_idle(now_ms=5))
    assert engine.idle and store.read_progress(NAME)[0].idle_since_ms == 5
    assert engine.plan_idle(now_ms=9).empty  # already idle


def test_an_idle_shard_applies_nothing_before_its_wake_is_durable() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process([view(1, 1_000)], loader(store))
    flush(engine, store, letters)
    durably(engine, store, engine.plan_idle(now_ms=5))
    with pytest.raises(RuntimeError, match="plan_wake"):
        engine.process([view(2, 2_000)], loader(store))


def test_waking_lifts_the_watermark_so_final_windows_stay_final() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process([view(1, 1_000)], loader(store))
    flush(engine, store, letters)
    durably(engine, store, engine.plan_idle(now_ms=5))
    # Meanwhile the other shards finalised everything up to 3 minutes.
    durably(engine, store, engine.plan_wake(frontier=3 * MINUTE))
    assert engine.watermark == 3 * MINUTE and not engine.idle
    engine.process(
        [view(2, 2 * MINUTE + 5_000, "/old"), view(3, 3 * MINUTE + 1_000, "/new")], loader(store)
    )
    plan = flush(engine, store, letters)
    assert [letter.reason for letter in plan.dead_letters] == [REASON_LATE]
    assert "already closed" in plan.dead_letters[0].error
    assert [row.key for row in plan.rows] == ["/new"]
    # The floor is durable: a restart decides the same way.
    assert store.read_progress(NAME)[0].watermark_floor == 3 * MINUTE
    assert new_engine(store).watermark == 3 * MINUTE


def test_a_wake_never_lowers_the_watermark() -> None:
    engine = ShardEngine(
        PAGE_VIEWS, ShardProgress(SHARD, Position(1), 10 * MINUTE, idle_since_ms=1)
    )
    plan = engine.plan_wake(frontier=MINUTE)
    assert plan.progress is not None
    assert plan.progress.watermark(LATENESS) == 10 * MINUTE - LATENESS


@given(batch=shard_records(), frontier=st.integers(0, 6 * MINUTE), data=st.data())
def test_after_a_wake_crashes_anywhere_store_what_an_uninterrupted_run_stores(
    batch: list[Record], frontier: int, data: st.DataObject
) -> None:
    """The wake is written before the first record after it, so a restart at any point
    reads the same floor and decides lateness exactly as the run without crashes."""

    def woken(store: MemoryPartialStore) -> ShardEngine:
        engine = new_engine(store)
        durably(engine, store, engine.plan_idle(now_ms=1))
        durably(engine, store, engine.plan_wake(frontier + batch_start))
        return engine

    batch_start = 1_795_773_600_000
    calm_store, calm_letters = MemoryPartialStore(), MemoryDeadLetters()
    calm = woken(calm_store)
    calm.process(batch, loader(calm_store))
    flush(calm, calm_store, calm_letters)

    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = woken(store)
    cursor = 0
    while cursor < len(batch):
        size = data.draw(st.integers(1, 8), label="batch size")
        engine.process(batch[cursor : cursor + size], loader(store))
        cursor += size
        action = data.draw(st.sampled_from(["carry on", "flush", *CRASHES]), label="then")
        if action == "carry on":
            continue
        if action == "flush":
            flush(engine, store, letters)
            continue
        if action != "lose":
            with pytest.raises(Crash):
                flush(engine, store, letters, action)
        engine = new_engine(store)
        checkpoint = engine.durable.checkpoint
        cursor = next(
            (i for i, r in enumerate(batch) if checkpoint is None or r.position > checkpoint),
            len(batch),
        )
    flush(engine, store, letters)

    expected, got = outcome(calm_store, calm_letters), outcome(store, letters)
    assert got.windows == expected.windows
    assert set(got.letters) == set(expected.letters)


# -- the runner ---------------------------------------------------------------------------

FAST = RunnerOptions(
    flush_interval=0.01, poll_interval=0.0, idle_poll_interval=0.01, report_interval=3600
)


def page_view(ts: int, page: str = "/a") -> bytes:
    return orjson.dumps({"event_id": str(ts), "ts": ts, "page": page})


def run(
    kinesis: FakeKinesis, store: MemoryPartialStore, dead: MemoryDeadLetters, idle_ms: int | None
) -> None:
    pipeline = replace(PAGE_VIEWS, idle_timeout_ms=idle_ms)
    runner = EmbeddedRunner(kinesis, store, dead, [pipeline], "stream", FAST)  # type: ignore[arg-type]
    runner.run(until_idle=0.4)


def test_the_runner_marks_quiet_shards_idle_and_wakes_them_with_the_frontier() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", page_view(1_000), page_view(200_000, "/b"))
    kinesis.put("s1", page_view(2_000))  # then nothing
    store, dead = MemoryPartialStore(), MemoryDeadLetters()

    run(kinesis, store, dead, idle_ms=None)
    assert not query_windows(store, PAGE_VIEWS, key="/a")[0].final  # s1 holds it open

    run(kinesis, store, dead, idle_ms=100)
    assert all(p.idle_since_ms is not None for p in store.read_progress(NAME))
    (first,) = query_windows(store, PAGE_VIEWS, key="/a")
    assert first.final and first.values["views"] == 2

    # s1 speaks again: once for the final minute (late), once for an open one.
    kinesis.put("s1", page_view(30_000), page_view(195_000, "/b"))
    run(kinesis, store, dead, idle_ms=10_000)
    progress = {p.shard_id: p for p in store.read_progress(NAME)}
    assert progress["s1"].idle_since_ms is None
    assert progress["s1"].watermark_floor == 200_000 - LATENESS
    assert [orjson.loads(letter.record.data)["ts"] for letter in dead.letters] == [30_000]
    assert query_windows(store, PAGE_VIEWS, key="/a")[0].values["views"] == 2
    assert query_windows(store, PAGE_VIEWS, key="/b")[0].values["views"] == 2


def test_a_child_of_a_resharded_shard_starts_at_what_is_final() -> None:
    """A split registers children with no events: were they to start with no watermark,
    the frontier would fall back and final windows would open again, and take events."""
    kinesis = FakeKinesis()
    kinesis.put("a", page_view(30_000))
    kinesis.put("b", page_view(600_000, "/b"))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    run(kinesis, store, dead, idle_ms=100)
    assert query_windows(store, PAGE_VIEWS, key="/a")[0].final

    kinesis.closed.add("b")  # b splits; its child c takes an old event for /a
    kinesis.parents["c"] = "b"
    kinesis.put("c", page_view(40_000))
    run(kinesis, store, dead, idle_ms=10_000)
    progress = {p.shard_id: p for p in store.read_progress(NAME)}
    assert progress["b"].ended
    assert progress["c"].watermark_floor == 600_000 - LATENESS
    (first,) = query_windows(store, PAGE_VIEWS, key="/a")
    assert first.final and first.values["views"] == 1
    assert [orjson.loads(letter.record.data)["ts"] for letter in dead.letters] == [40_000]

    kinesis.put("a", page_view(45_000))  # and a wakes: still late
    run(kinesis, store, dead, idle_ms=10_000)
    (first,) = query_windows(store, PAGE_VIEWS, key="/a")
    assert first.final and first.values["views"] == 1
    assert len(dead.letters) == 2


def test_records_redriven_for_another_pipeline_do_not_wake_an_idle_shard() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", page_view(1_000), page_view(200_000, "/b"))
    kinesis.put("s1", page_view(2_000))
    store, dead = MemoryPartialStore(), MemoryDeadLetters()
    run(kinesis, store, dead, idle_ms=100)
    assert all(p.idle_since_ms is not None for p in store.read_progress(NAME))

    kinesis.put("s1", wrap("another-pipeline", "other:s9:1:0", page_view(300_000)))
    run(kinesis, store, dead, idle_ms=100)
    progress = {p.shard_id: p for p in store.read_progress(NAME)}
    assert progress["s1"].idle_since_ms is not None, "not for page-views: still idle"
    assert progress["s1"].watermark_floor is None


class RaceyStore(MemoryPartialStore):
    """Another worker marks shard ``y`` idle right after the waking worker has read the
    progress (between its read of the frontier and its write of the floor)."""

    def __init__(self) -> None:
        super().__init__()
        self.race_once = False

    def read_progress(self, pipeline: str) -> list[ShardProgress]:
        seen = super().read_progress(pipeline)
        if self.race_once:
            self.race_once = False
            y = self.progress[(pipeline, "y")]
            self.progress[(pipeline, "y")] = replace(y, idle_since_ms=1)
        return seen


def test_a_wake_raced_by_another_worker_marking_a_shard_idle_still_keeps_final_windows_final() -> (
    None
):
    store = RaceyStore()
    for shard_id, max_ts, idle in (
        ("x", 50_000, True),
        ("y", 100_000, False),
        ("z", 300_000, False),
    ):
        store.register_shard(NAME, STREAM, shard_id)
        store.progress[(NAME, shard_id)] = ShardProgress(
            shard_id, max_event_time=max_ts, idle_since_ms=1 if idle else None
        )
    engine = ShardEngine(PAGE_VIEWS, store.progress[(NAME, "x")])
    store.race_once = True

    shard_work.wake(engine, store, STREAM)

    # Once y is idle, only z holds windows open: they are final up to z's watermark, and
    # x's floor must be there too, or x would take events for windows reported final.
    frontier = final_frontier(store.read_progress(NAME), LATENESS)
    assert engine.durable.watermark_floor == 300_000 - LATENESS
    assert frontier == 300_000 - LATENESS
