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

from processors.sinks.ports import PartialStore
from processors.windowing.engine import ShardEngine
from streams import shard_work
from streams.shard_work import register_children

__all__ = ["register_children", "stable_wake"]


def stable_wake(engine: ShardEngine, store: PartialStore, stream_identity: str) -> int | None:
    """Wake ``engine``'s idle shard with a floor that holds (:func:`shard_work.wake`
    re-reads the frontier and raises the floor until it does). Returns the floor."""
    return shard_work.wake(engine, store, stream_identity)
