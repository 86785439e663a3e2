"""Floors that hold when several workers move the frontier at once (the KCL runner).

A wake (an idle shard sends again) and a shard end (children registered) both read the
pipeline's final frontier and then write a watermark floor. With one process, as in the
embedded runner, nothing moves in between. With several workers, another shard may be
marked idle or read further between the read and the write, and a finalizer or a query
may see a higher frontier in that gap, and report windows final that the floor would then
reopen.

The frontier as everybody else saw it in that gap (this shard still idle; the children
not yet registered) only rises: watermarks never go back, idle marks and shard ends only
remove what holds windows open, and a wake or a registration floors its shard at the
frontier of its moment. So after writing the floor, read again and compute that frontier
once more; while it is above the floor, raise the floor to it and repeat. When the loop
ends, the floor is at or above every frontier anyone could have seen, and only then are
the shard's records applied (or the children's leases started).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from processors.sinks.ports import PartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.results import final_frontier
from streams import shard_work

log = logging.getLogger("shardflow.kcl")

MAX_ROUNDS = 100
"""Each round needs another worker to move the frontier in between: a bound, not a wait."""


def _above(seen: int | None, floor: int | None) -> bool:
    return seen is not None and (floor is None or seen > floor)


def stable_wake(engine: ShardEngine, store: PartialStore, stream_identity: str) -> int | None:
    """Wake ``engine``'s idle shard with a floor that holds (:func:`shard_work.wake`
    re-reads the frontier and raises the floor until it does). Returns the floor."""
    return shard_work.wake(engine, store, stream_identity)


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
