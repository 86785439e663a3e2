"""The embedded runner: one process reads every shard and keeps effects exactly once.

For each shard, records flow reader → :class:`ShardEngine` (one per pipeline). Every
``flush_interval`` seconds a shard's engines make their work durable in the order the
invariant needs (design.md section 4): dead letters, intent, partial rows, checkpoint.
Only then does the checkpoint move. After a crash the next run loads each shard's
checkpoint and replays from it; rows already holding a record skip it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from processors.finalizer import FinalizeReport
from processors.pipeline import Pipeline
from processors.sinks.ports import DeadLetterSink, PartialStore
from processors.windowing.engine import ShardEngine
from processors.windowing.redrive_claims import Claim, ClaimLoader
from processors.windowing.results import final_frontier
from processors.windowing.rows import RowKey, StoredRow
from streams import shard_work
from streams.aws_errors import is_retryable
from streams.backoff import full_jitter
from streams.finalize_schedule import FinalizeSchedule
from streams.shard_map import list_all_shards
from streams.shard_reader import ShardReader

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger("shardflow.runner")

_T = TypeVar("_T")


def _per_pipeline(sink: _T | Mapping[str, _T], pipelines: Sequence[Pipeline[Any]]) -> dict[str, _T]:
    if isinstance(sink, Mapping):
        missing = [p.name for p in pipelines if p.name not in sink]
        if missing:
            raise ValueError(f"no sink given for {', '.join(missing)}")
        return {p.name: sink[p.name] for p in pipelines}
    return {p.name: sink for p in pipelines}


@dataclass(frozen=True)
class RunnerOptions:
    """Timing knobs. The defaults respect the shard read limit (5 GetRecords/s)."""

    flush_interval: float = 1.0
    poll_interval: float = 0.2
    idle_poll_interval: float = 1.0
    list_shards_interval: float = 30.0
    flush_retry_deadline: float = 120.0
    report_interval: float = 10.0
    finalize_interval: float = 5.0


@dataclass
class RunStats:
    """Counters the runner keeps while it runs (read by the live view)."""

    records: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    flushes: int = 0
    rows_written: int = 0
    shards: int = 0
    millis_behind: dict[str, int] = field(default_factory=dict)


@dataclass
class _ShardWorker:
    reader: ShardReader
    engines: list[ShardEngine]
    started_at: float
    next_poll_at: float = 0.0
    last_record_at: float | None = None
    last_flush_at: float = 0.0
    failures: int = 0
    millis_behind: int | None = None
    caught_up: bool = False

    @property
    def shard_id(self) -> str:
        return self.reader.shard_id

    @property
    def unflushed(self) -> bool:
        """Applied work not yet durable, or a shard end not yet recorded."""
        if any(engine.has_unflushed for engine in self.engines):
            return True
        return self.reader.ended and not all(engine.durable.ended for engine in self.engines)


class EmbeddedRunner:
    """Reads all shards of ``stream`` and runs ``pipelines`` over them."""

    def __init__(
        self,
        kinesis: KinesisClient,
        store: PartialStore | Mapping[str, PartialStore],
        dead_letters: DeadLetterSink | Mapping[str, DeadLetterSink],
        pipelines: Sequence[Pipeline[Any]],
        stream: str,
        options: RunnerOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream_identity: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        finalize: FinalizeSchedule | None = None,
    ) -> None:
        """``stream_identity`` is recorded with each shard's progress (the stream's ARN and
        creation time) so that a table holding another stream's state is refused.
        ``store`` and ``dead_letters`` may be one for every pipeline, or one per pipeline
        name (pipelines that declare their own sinks). ``finalize`` writes final rows and
        sends alerts between polls, and once more when the run ends."""
        if not pipelines:
            raise ValueError("at least one pipeline is required")
        self._kinesis = kinesis
        self._stores = _per_pipeline(store, pipelines)
        self._dead_letter_sinks = _per_pipeline(dead_letters, pipelines)
        self._pipelines = list(pipelines)
        self._stream = stream
        self._identity = stream_identity or stream
        self._options = options or RunnerOptions()
        self._clock = clock
        self._wall_clock = wall_clock
        self._workers: dict[str, _ShardWorker] = {}
        self._finished: set[str] = set()
        self._rediscover = True
        self._finalize = finalize
        self.stats = RunStats()

    @property
    def finalized(self) -> FinalizeReport:
        """Final rows written and alerts sent so far (zero without a finalizer)."""
        return self._finalize.totals if self._finalize is not None else FinalizeReport()

    # -- shard discovery ------------------------------------------------------------

    def _list_shards(self) -> list[dict[str, Any]]:
        return list_all_shards(self._kinesis, self._stream)

    def _discover(self, now: float) -> None:
        shards = self._list_shards()
        self._rediscover = False
        listed = {shard["ShardId"] for shard in shards}
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._workers or shard_id in self._finished:
                continue
            parents = [shard.get("ParentShardId"), shard.get("AdjacentParentShardId")]
            if any(p in listed and p not in self._finished for p in parents if p):
                continue  # parents are read to their end first
            engines = []
            for pipeline in self._pipelines:
                floor = self._frontier(pipeline, shard_id) if any(parents) else None
                store = self._stores[pipeline.name]
                progress = store.register_shard(pipeline.name, self._identity, shard_id, floor)
                engines.append(ShardEngine(pipeline, progress))
            if all(engine.durable.ended for engine in engines):
                self._finished.add(shard_id)
                continue
            for engine in engines:
                if engine.idle and engine.pipeline.idle_timeout_ms is None:
                    self._wake(shard_id, engine)  # idleness was turned off since
            checkpoints = [engine.durable.checkpoint for engine in engines]
            start_after = None if None in checkpoints else min(c for c in checkpoints if c)
            reader = ShardReader(self._kinesis, self._stream, shard_id, start_after)
            self._workers[shard_id] = _ShardWorker(
                reader, engines, started_at=now, last_flush_at=now
            )
            log.info(
                "shard %s: starting %s",
                shard_id,
                f"after {start_after.sequence_number}" if start_after else "at its oldest record",
            )
        self.stats.shards = len(self._workers)

    # -- processing -----------------------------------------------------------------

    def _register_children(self, shard_id: str) -> None:
        """Register a closed shard's children before its end is recorded, so a query never
        sees a moment where every known shard has ended while the children hold data."""
        children = [
            shard["ShardId"]
            for shard in self._list_shards()
            if shard_id in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
        ]
        for pipeline in self._pipelines:
            if not children:
                break
            # A child starts at what is final now: registering it (active, no events yet)
            # must not make a final window open again, nor take events for one.
            floor = self._frontier(pipeline, shard_id)
            store = self._stores[pipeline.name]
            for child in children:
                store.register_shard(pipeline.name, self._identity, child, floor)

    def _frontier(self, pipeline: Pipeline[Any], shard_id: str) -> int | None:
        store = self._stores[pipeline.name]
        shards = self._retrying(
            "reading progress", shard_id, lambda: store.read_progress(pipeline.name)
        )
        return final_frontier(shards, pipeline.allowed_lateness_ms)

    def _retrying(self, what: str, shard_id: str, call: Callable[[], _T]) -> _T:
        """``call()``, retried with backoff on throttling and transient errors."""
        deadline = self._clock() + self._options.flush_retry_deadline
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:
                if not is_retryable(exc) or self._clock() > deadline:
                    raise
                attempt += 1
                delay = full_jitter(attempt, base=0.2, cap=10.0)
                log.warning(
                    "shard %s: %s failed (%s), retrying in %.1fs", shard_id, what, exc, delay
                )
                time.sleep(delay)

    def _loader(
        self, pipeline: str, shard_id: str
    ) -> Callable[[Sequence[RowKey]], list[StoredRow]]:
        store = self._stores[pipeline]

        def load(keys: Sequence[RowKey]) -> list[StoredRow]:
            return self._retrying(
                "loading rows", shard_id, lambda: store.load_rows(pipeline, shard_id, keys)
            )

        return load

    def _claim_loader(self, pipeline: str, shard_id: str) -> ClaimLoader:
        store = self._stores[pipeline]

        def load(ids: Sequence[str]) -> dict[str, Claim]:
            return self._retrying(
                "loading redrive claims", shard_id, lambda: store.load_redrive_claims(pipeline, ids)
            )

        return load

    def _poll(self, worker: _ShardWorker, now: float) -> None:
        result = worker.reader.read()
        options = self._options
        if result.throttled:
            worker.failures += 1
            worker.next_poll_at = now + full_jitter(worker.failures, base=0.2, cap=10.0)
            return
        if result.renewed:
            worker.caught_up = False
            return
        worker.failures = 0
        worker.millis_behind = result.millis_behind
        worker.caught_up = not result.records and not result.millis_behind
        if result.millis_behind is not None:
            self.stats.millis_behind[worker.shard_id] = result.millis_behind
        if result.records:
            for engine in worker.engines:
                name = engine.pipeline.name
                if engine.idle:
                    if not any(r.only_for in (None, name) for r in result.records):
                        continue  # only records redriven for other pipelines: stay idle
                    self._wake(worker.shard_id, engine)
                engine.process(
                    result.records,
                    self._loader(name, worker.shard_id),
                    self._claim_loader(name, worker.shard_id),
                )  # shard_work.process, with each load retried
            worker.last_record_at = now
            self.stats.records += len(result.records)
            worker.next_poll_at = now + options.poll_interval
        else:
            worker.next_poll_at = now + options.idle_poll_interval

    # -- idleness -------------------------------------------------------------------

    def _wake(self, shard_id: str, engine: ShardEngine) -> None:
        """An idle shard sent records: lift its watermark to what is final now, durably,
        before any of them is applied (ShardEngine.plan_wake)."""
        pipeline = engine.pipeline
        store = self._stores[pipeline.name]
        now = self._retrying(
            "waking", shard_id, lambda: shard_work.wake(engine, store, self._identity)
        )
        log.info(
            "shard %s: %s active again; windows ending by %s stay final without it",
            shard_id,
            pipeline.name,
            now,
        )

    def _mark_idle(self, worker: _ShardWorker, now: float) -> None:
        """Shards quiet for a pipeline's idle timeout stop holding its windows open."""
        if worker.reader.ended or worker.unflushed:
            return
        quiet = self._idle_for(worker, now)
        if not quiet:
            return
        for engine in shard_work.due_idle(worker.engines, quiet):
            plan = engine.plan_idle(int(self._wall_clock() * 1000))
            store = self._stores[engine.pipeline.name]
            self._retrying(
                "marking idle",
                worker.shard_id,
                lambda: shard_work.write_progress_only(engine, store, self._identity, plan),  # noqa: B023
            )
            log.info(
                "shard %s: quiet for %.0fs, idle for %s: its windows no longer wait for it",
                worker.shard_id,
                quiet,
                engine.pipeline.name,
            )

    def flush(self, worker: _ShardWorker) -> None:
        """Make the worker's applied records durable, retrying transient failures."""
        self._retrying("flush", worker.shard_id, lambda: self._flush_once(worker))
        worker.last_flush_at = self._clock()

    def _flush_once(self, worker: _ShardWorker) -> None:
        """One flush, in the invariant's order. A retry after a failure part-way through
        plans again: letters already sent are not sent again, rows are rewritten as-is."""
        ended = worker.reader.ended
        if ended and not all(engine.durable.ended for engine in worker.engines):
            self._register_children(worker.shard_id)
        for engine in worker.engines:
            name = engine.pipeline.name
            plan = shard_work.flush(
                engine, self._stores[name], self._dead_letter_sinks[name], self._identity, ended
            )
            if plan is None:
                continue
            for letter in plan.dead_letters:
                self.stats.dead_letters[letter.reason] = (
                    self.stats.dead_letters.get(letter.reason, 0) + 1
                )
            self.stats.rows_written += len(plan.rows)
        self.stats.flushes += 1

    # -- the loop -------------------------------------------------------------------

    def _idle_for(self, worker: _ShardWorker, now: float) -> float:
        """How long the shard has been quiet: its last read succeeded, returned nothing and
        was not behind the tip. A throttled or failing shard is never quiet."""
        if worker.failures or not worker.caught_up:
            return 0.0
        return now - (
            worker.last_record_at if worker.last_record_at is not None else worker.started_at
        )

    def run(self, stop: threading.Event | None = None, until_idle: float | None = None) -> RunStats:
        """Process until ``stop`` is set, or until every shard has been quiet for
        ``until_idle`` seconds with all state durable. Flushes everything before returning."""
        stop = stop or threading.Event()
        options = self._options
        started = self._clock()
        next_list = started
        next_report = started + options.report_interval
        reported_records = 0
        while not stop.is_set():
            now = self._clock()
            if now >= next_list:
                self._discover(now)
                next_list = now + options.list_shards_interval
            for worker in list(self._workers.values()):
                if stop.is_set():
                    break
                if now >= worker.next_poll_at and not worker.reader.ended:
                    self._poll(worker, now)
                    now = self._clock()
                if worker.unflushed and (
                    now - worker.last_flush_at >= options.flush_interval or worker.reader.ended
                ):
                    self.flush(worker)
                self._mark_idle(worker, now)
                if worker.reader.ended and not worker.unflushed:
                    engines_ended = all(e.durable.ended for e in worker.engines)
                    if engines_ended:
                        log.info("shard %s: read to its end", worker.shard_id)
                        del self._workers[worker.shard_id]
                        self._finished.add(worker.shard_id)
                        self._rediscover = True
                        next_list = now  # children may start now
            if self._finalize is not None:
                self._finalize.maybe_run()
            now = self._clock()
            if now >= next_report:
                rate = (self.stats.records - reported_records) / options.report_interval
                reported_records = self.stats.records
                next_report = now + options.report_interval
                log.info(
                    "%d records (%.0f/s), %d shards, dead letters %s, behind %s ms",
                    self.stats.records,
                    rate,
                    len(self._workers),
                    self.stats.dead_letters or "none",
                    max(self.stats.millis_behind.values(), default=0),
                )
            if (
                until_idle is not None
                and not self._rediscover
                and all(
                    self._idle_for(w, now) >= until_idle and not w.unflushed
                    for w in self._workers.values()
                )
            ):
                log.info("every shard quiet for %.1fs and all state durable: stopping", until_idle)
                break
            next_due = min(
                (w.next_poll_at for w in self._workers.values() if not w.reader.ended),
                default=now + options.idle_poll_interval,
            )
            stop.wait(max(0.0, min(next_due - now, options.flush_interval, 0.5)))
        self.flush_all()
        if self._finalize is not None:
            self._finalize.run_all()
        return self.stats

    def flush_all(self) -> None:
        for worker in list(self._workers.values()):
            if worker.unflushed:
                self.flush(worker)
