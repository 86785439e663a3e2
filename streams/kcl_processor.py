"""shardflow's record processor for the KCL MultiLangDaemon: one shard, every pipeline.

It makes effects durable through :mod:`streams.shard_work`, the path every runner uses,
then checkpoints the lease at the lowest position every pipeline has stored, never beyond
(:mod:`streams.kcl_lease`).

- ``initialize``: register the shard (its durable progress) and build one engine per
  pipeline. A KCL checkpoint past what the results table holds means the lease table
  belongs to other results: refused, since the records in between would never be read.
- ``processRecords``: wake idle engines, apply, flush every ``flush_interval``, checkpoint;
  empty batches (``callProcessRecordsEvenForEmptyRecordList``) flush and mark quiet shards
  idle, as the embedded runner does.
- ``shardEnded``: register the children (floors held against concurrent workers), flush
  with the end recorded, checkpoint SHARD_END.
- ``leaseLost``: drop everything applied and write nothing more.
- ``shutdownRequested``: flush and checkpoint.

A conditional write that finds newer state (a zombie: another worker owns the shard now),
or a checkpoint the daemon refuses because the lease is no longer held
(``ShutdownException``), fences the processor: it writes nothing more and waits for the
daemon's ``leaseLost``;
if that does not come within ``fence_grace`` it fails. Transient AWS errors are retried
with backoff until ``retry_deadline``; anything else fails the action (see
:mod:`streams.kcl_protocol`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from processors.pipeline import Pipeline
from processors.sinks.ports import DeadLetterSink, PartialStore, StaleWrite
from processors.windowing.engine import ShardEngine
from processors.windowing.records import Position, Record
from streams import shard_work
from streams.kcl_frontier import register_children, stable_wake
from streams.kcl_lease import (
    Outcome,
    check_not_ahead,
    checkpoint_lease,
    describe,
    lease_position,
    retrying,
)
from streams.kcl_protocol import Checkpointer

log = logging.getLogger("shardflow.kcl")

_T = TypeVar("_T")


class Fenced(RuntimeError):
    """Another writer owns the shard's state, and the daemon still thinks this one does."""


@dataclass(frozen=True)
class ProcessorOptions:
    flush_interval: float = 1.0
    retry_deadline: float = 120.0
    checkpoint_attempts: int = 8
    fence_grace: float = 60.0


ChildLister = Callable[[str], Sequence[str]]
"""The ids of a shard's children (after a split or merge)."""


class KclShardProcessor:
    """The :class:`~streams.kcl_protocol.RecordProcessor` of one shard."""

    def __init__(
        self,
        pipelines: Sequence[Pipeline[Any]],
        stores: Mapping[str, PartialStore],
        letters: Mapping[str, DeadLetterSink],
        stream_identity: str,
        list_children: ChildLister,
        options: ProcessorOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._pipelines = list(pipelines)
        self._stores = stores
        self._letters = letters
        self._identity = stream_identity
        self._list_children = list_children
        self._options = options or ProcessorOptions()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.shard_id = "?"
        self.engines: list[ShardEngine] = []
        self.lost = False
        self._fenced_at: float | None = None
        self._kcl_checkpoint: Position | None = None
        self._delivered: Position | None = None
        self._started_at = self._last_flush_at = clock()
        self._last_record_at: float | None = None
        self._caught_up = False

    # -- the protocol's actions -------------------------------------------------------

    def initialize(self, shard_id: str, sequence_number: str | None, sub: int | None) -> None:
        self.shard_id = shard_id
        for pipeline in self._pipelines:
            store = self._stores[pipeline.name]
            progress = self._retrying(
                "registering",
                partial(store.register_shard, pipeline.name, self._identity, shard_id),
            )
            self.engines.append(ShardEngine(pipeline, progress))
        self._kcl_checkpoint = lease_position(sequence_number, sub)
        check_not_ahead(shard_id, self._kcl_checkpoint, self.engines)
        for engine in self.engines:
            if engine.idle and engine.pipeline.idle_timeout_ms is None:
                self._wake(engine)  # idleness was turned off since
        self._started_at = self._last_flush_at = self._clock()
        log.info(
            "shard %s: leased at %s; durable in the results table through %s",
            shard_id,
            sequence_number,
            ", ".join(f"{e.pipeline.name} {describe(e.durable.checkpoint)}" for e in self.engines),
        )

    def process_records(
        self, records: list[Record], millis_behind: int | None, checkpointer: Checkpointer
    ) -> None:
        if not self._active():
            return
        now = self._clock()
        if records:
            self._delivered = records[-1].position
            self._fencing(lambda: self._apply(records))
            if not self._active():
                return
            self._last_record_at = now
            self._caught_up = False
        else:
            self._caught_up = not millis_behind
        if self._unflushed and now - self._last_flush_at >= self._options.flush_interval:
            self._fencing(lambda: self._flush(ended=False))
            if self._active():
                self._checkpoint(checkpointer)
        if self._active():
            self._fencing(lambda: self._mark_idle(now))

    def lease_lost(self) -> None:
        log.info("shard %s: lease lost; dropping what was not durable", self.shard_id)
        self.lost = True
        self.engines = []

    def shard_ended(self, checkpointer: Checkpointer) -> None:
        if self.lost:
            return
        self._check_fence(force=True)
        children = self._retrying(
            "listing children", lambda: list(self._list_children(self.shard_id))
        )
        for engine in self.engines:
            if engine.durable.ended:
                continue
            pipeline = engine.pipeline
            store = self._stores[pipeline.name]
            self._retrying(
                "registering children",
                partial(
                    register_children,
                    store,
                    pipeline.name,
                    pipeline.allowed_lateness_ms,
                    self._identity,
                    children,
                ),
            )
        self._fencing(lambda: self._flush(ended=True))
        self._check_fence(force=True)
        if self._checkpoint(checkpointer, at_end=True) == "throttled":
            # Unacknowledged, the daemon would wait for this end forever: fail instead, and
            # the shard's next owner ends it again (all of it is already durable).
            raise RuntimeError(f"shard {self.shard_id}: could not checkpoint its end")
        log.info(
            "shard %s: read to its end; children %s", self.shard_id, ", ".join(children) or "none"
        )

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        if not self._active():
            return
        self._fencing(lambda: self._flush(ended=False))
        if self._active():
            self._checkpoint(checkpointer)
        log.info("shard %s: shutdown requested; everything applied is durable", self.shard_id)

    # -- applying and flushing --------------------------------------------------------

    def _apply(self, records: list[Record]) -> None:
        for engine in self.engines:
            name = engine.pipeline.name
            if engine.idle:
                if not any(r.only_for in (None, name) for r in records):
                    continue  # only records redriven for other pipelines: stay idle
                self._wake(engine)
            store = self._stores[name]
            self._retrying(
                "applying records",
                partial(shard_work.process, engine, store, records),
            )

    def _wake(self, engine: ShardEngine) -> None:
        store = self._stores[engine.pipeline.name]
        floor = self._retrying("waking", lambda: stable_wake(engine, store, self._identity))
        log.info(
            "shard %s: %s active again; windows ending by %s stay final without it",
            self.shard_id,
            engine.pipeline.name,
            floor,
        )

    @property
    def _unflushed(self) -> bool:
        return any(engine.has_unflushed for engine in self.engines)

    def _flush(self, ended: bool) -> None:
        for engine in self.engines:
            name = engine.pipeline.name
            store, letters = self._stores[name], self._letters[name]
            self._retrying(
                "flush",
                partial(shard_work.flush, engine, store, letters, self._identity, ended),
            )
        self._last_flush_at = self._clock()

    def _mark_idle(self, now: float) -> None:
        """Quiet for a pipeline's idle timeout, at the tip, all durable: mark it idle."""
        if self._unflushed or not self._caught_up:
            return
        quiet = now - (
            self._last_record_at if self._last_record_at is not None else self._started_at
        )
        for engine in shard_work.due_idle(self.engines, quiet):
            plan = engine.plan_idle(int(self._wall_clock() * 1000))
            store = self._stores[engine.pipeline.name]
            self._retrying(
                "marking idle",
                partial(shard_work.write_progress_only, engine, store, self._identity, plan),
            )
            log.info(
                "shard %s: quiet for %.0fs, idle for %s: its windows no longer wait for it",
                self.shard_id,
                quiet,
                engine.pipeline.name,
            )

    # -- checkpoints --------------------------------------------------------------------

    def _durable(self) -> Position | None:
        """What every pipeline has made durable (and the daemon has delivered)."""
        checkpoints = [engine.durable.checkpoint for engine in self.engines]
        if not checkpoints or any(c is None for c in checkpoints):
            return None
        lowest = min(c for c in checkpoints if c is not None)
        delivered = self._delivered
        if delivered is None:
            return None  # the daemon allows nothing past what it delivered to this child
        return min(lowest, delivered)

    def _checkpoint(self, checkpointer: Checkpointer, at_end: bool = False) -> Outcome:
        """Checkpoint the lease at what is durable (``at_end``: SHARD_END); a throttled one
        is left to the next batch."""
        target = None if at_end else self._durable()
        if not at_end and (
            target is None or (self._kcl_checkpoint is not None and target <= self._kcl_checkpoint)
        ):
            return "taken"
        outcome = checkpoint_lease(
            checkpointer, target, self.shard_id, self._options.checkpoint_attempts, self._sleep
        )
        if outcome == "taken":
            self._kcl_checkpoint = target
        elif outcome == "gone" and not at_end:
            # ShutdownException: the lease table no longer has this worker holding the
            # shard, so another may own it already. Until the daemon's leaseLost, write
            # nothing more, as when a conditional write is refused.
            self._fenced_at = self._clock()
            self.engines = []
        return outcome

    # -- failures -------------------------------------------------------------------------

    def _active(self) -> bool:
        if self.lost:
            return False
        self._check_fence()
        return self._fenced_at is None

    def _check_fence(self, force: bool = False) -> None:
        fenced = self._fenced_at
        if fenced is not None and (force or self._clock() - fenced > self._options.fence_grace):
            raise Fenced(
                f"shard {self.shard_id}: newer state was written by another worker, and the "
                "daemon still holds this shard's lease: stopping"
            )

    def _fencing(self, call: Callable[[], None]) -> None:
        """``call()``; a write refused because newer state is stored fences this processor."""
        try:
            call()
        except StaleWrite as exc:
            log.error(
                "shard %s: %s; another worker owns this shard now: writing nothing more",
                self.shard_id,
                exc,
            )
            self._fenced_at = self._clock()
            self.engines = []

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()``, retried with backoff on throttling and transient errors."""
        return retrying(
            what, self.shard_id, call, self._options.retry_deadline, self._clock, self._sleep
        )
