"""One shard's engine and its storage, in the order the exactly-once invariant needs
(design.md section 4). The embedded runner, the KCL record processor and the Lambda
handler all make their work durable through these, so they store the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from processors.sinks.ports import DeadLetterSink, PartialStore
from processors.windowing.engine import FlushPlan, ShardEngine, ShardProgress
from processors.windowing.records import Record
from processors.windowing.results import final_frontier

log = logging.getLogger("shardflow.shards")


def process(engine: ShardEngine, store: PartialStore, records: Sequence[Record]) -> None:
    """Apply ``records`` (shard order), loading the stored rows and redrive claims they
    may touch first (after a restart or a lease move)."""
    name, shard_id = engine.pipeline.name, engine.shard_id
    engine.process(
        records,
        lambda keys: store.load_rows(name, shard_id, keys),
        lambda ids: store.load_redrive_claims(name, ids),
    )


def flush(
    engine: ShardEngine,
    store: PartialStore,
    letters: DeadLetterSink,
    stream_identity: str,
    ended: bool = False,
) -> FlushPlan | None:
    """Make everything the engine applied durable: dead letters, redrive claims, the
    intent, the partial rows, then the checkpoint. Returns what was written (None: there
    was nothing). Safe to call again after a failure part-way: letters already sent are
    not sent again, rows are rewritten as they were."""
    plan = engine.plan_flush(ended=ended)
    if plan.empty:
        return None
    name = engine.pipeline.name
    if plan.dead_letters:
        letters.send(plan.dead_letters)
        engine.dead_letters_sent(plan)
    if plan.redrive_claims:
        store.write_redrive_claims(name, engine.shard_id, plan.redrive_claims)
    if plan.intent is not None:
        store.write_intent(name, stream_identity, plan.intent)
    if plan.rows:
        store.write_rows(plan.rows)
    assert plan.progress is not None
    store.write_progress(name, stream_identity, plan.progress)
    engine.confirm_flush(plan)
    return plan


def write_progress_only(
    engine: ShardEngine, store: PartialStore, stream_identity: str, plan: FlushPlan
) -> None:
    """A plan that only moves progress (marking idle, waking), made durable."""
    if plan.progress is None:
        return
    store.write_progress(engine.pipeline.name, stream_identity, plan.progress)
    engine.confirm_flush(plan)


def due_idle(engines: Sequence[ShardEngine], quiet_s: float) -> list[ShardEngine]:
    """The engines whose pipeline's idle timeout the shard has been quiet for (at its tip,
    everything durable: the caller's to judge) and that are not idle yet."""
    return [
        engine
        for engine in engines
        if not engine.idle
        and engine.pipeline.idle_timeout_ms is not None
        and quiet_s * 1000 >= engine.pipeline.idle_timeout_ms
    ]


def frontier(engine: ShardEngine, store: PartialStore) -> int | None:
    """The pipeline's final frontier now, from every shard's durable progress."""
    pipeline = engine.pipeline
    return final_frontier(store.read_progress(pipeline.name), pipeline.allowed_lateness_ms)


def wake(engine: ShardEngine, store: PartialStore, stream_identity: str) -> int | None:
    """An idle shard sent records: lift its watermark to what is final now, durably,
    before any of them is applied (ShardEngine.plan_wake). Returns the floor it got.

    With several workers (KCL, Lambda), another one may mark some other shard idle
    between this read of the frontier and this write of the floor, raising the frontier
    past the floor: a finalizer could then finalize a window this shard still takes
    events for. So after writing, the frontier is read again, counting this shard as if
    it were still idle; while that is higher, the floor is raised to it. Once the wake is
    durable, this shard holds the frontier at its floor, so it cannot rise further."""
    pipeline, shard_id = engine.pipeline, engine.shard_id
    while True:
        shards = [
            progress
            if progress.shard_id != shard_id or progress.idle_since_ms is not None
            else replace(progress, idle_since_ms=0)
            for progress in store.read_progress(pipeline.name)
        ]
        now = final_frontier(shards, pipeline.allowed_lateness_ms)
        plan = engine.plan_wake(now)
        if plan.progress is None:
            return engine.durable.watermark_floor
        write_progress_only(engine, store, stream_identity, plan)


MAX_ROUNDS = 100
"""Each round needs another worker to move the frontier in between: a bound, not a wait."""


def _above(seen: int | None, floor: int | None) -> bool:
    return seen is not None and (floor is None or seen > floor)


def register_children(
    store: PartialStore,
    pipeline_name: str,
    allowed_lateness_ms: int,
    stream_identity: str,
    children: Sequence[str],
) -> int | None:
    """Register a closed shard's children (before its end is recorded) with their floor at
    the frontier, raised until no frontier seen before they were registered lies above
    it. Children already registered (by the other parent of a merge) keep their
    progress. Returns the floor given to the new ones."""
    if not children:
        return None
    before = store.read_progress(pipeline_name)
    known = {p.shard_id for p in before}
    new = [child for child in children if child not in known]
    floor = final_frontier(before, allowed_lateness_ms)
    for child in children:
        store.register_shard(pipeline_name, stream_identity, child, floor)
    for _ in range(MAX_ROUNDS):
        if not new:
            return floor
        progress = store.read_progress(pipeline_name)
        seen = final_frontier([p for p in progress if p.shard_id not in new], allowed_lateness_ms)
        if not _above(seen, floor):
            return floor
        log.info(
            "%s: frontier moved to %s while registering %s; floor raised from %s",
            pipeline_name,
            seen,
            ", ".join(new),
            floor,
        )
        floor = seen
        current = {p.shard_id: p for p in progress}
        for child in new:
            stored = current.get(child) or ShardProgress(child)
            if stored.checkpoint is None and _above(floor, stored.watermark_floor):
                store.write_progress(
                    pipeline_name, stream_identity, replace(stored, watermark_floor=floor)
                )
    raise RuntimeError(f"{pipeline_name}: the frontier kept moving while registering children")
