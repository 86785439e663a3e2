"""The Lambda runner's work, apart from where its settings and clients come from.

:class:`BatchRunner` applies one event source mapping batch (one shard) to each pipeline
through :mod:`streams.shard_work`, the path every runner takes to durability, and says
where Lambda must retry from if part of it is not durable. :class:`FinalizePass` is what
the scheduled function does: register new shards, record ended and quiet ones, and write
final rows and alerts (:class:`processors.finalizer.Finalizer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from processors.finalizer import Finalizer, FinalizeReport
from processors.pipeline import Pipeline
from processors.sinks.ports import DeadLetterSink, PartialStore, StaleWrite
from processors.windowing.engine import ShardEngine
from processors.windowing.records import Position, Record
from streams import shard_work
from streams.lambda_event import KinesisBatch, first_not_durable
from streams.lambda_progress import DynamoShardClaims, ShardClaims
from streams.lambda_shards import MarkReport, mark_shards, register_new_shards

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger("shardflow.lambda")

ShardLister = Callable[[], Sequence[Mapping[str, Any]]]
"""The stream's shards (ListShards, every page)."""


@dataclass(frozen=True)
class PipelineSinks:
    """One pipeline with where its state goes."""

    pipeline: Pipeline[Any]
    store: PartialStore
    dead_letters: DeadLetterSink
    claims: ShardClaims


class ClaimLost(RuntimeError):
    """The shard was marked idle again and again while this invocation woke it."""


@dataclass
class BatchOutcome:
    """What one batch did: ``retry_from`` is the sequence number Lambda retries from."""

    records: int = 0
    rows_written: int = 0
    dead_letters: int = 0
    retry_from: str | None = None
    error: BaseException | None = None

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The partial batch response (``ReportBatchItemFailures``)."""
        if self.retry_from is None:
            return {"batchItemFailures": []}
        return {"batchItemFailures": [{"itemIdentifier": self.retry_from}]}


class BatchRunner:
    """Applies batches of one stream's shards to its pipelines."""

    def __init__(
        self,
        stream_identity: str,
        sinks: Sequence[PipelineSinks],
        list_shards: ShardLister,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = stream_identity
        self._sinks = list(sinks)
        self._list_shards = list_shards
        self._wall_clock = wall_clock

    def run(self, batch: KinesisBatch, token: str) -> BatchOutcome:
        """Every pipeline processes and flushes the batch, one after the other. On any
        failure the outcome names the first record that is not durable for every
        pipeline (flushes are all or nothing per pipeline); a retry from there skips what
        each pipeline already holds."""
        records = batch.records()
        outcome = BatchOutcome(records=len(records))
        durable: dict[str, Position | None] = {}
        try:
            for sinks in self._sinks:
                name = sinks.pipeline.name
                engine, work = self._claim(sinks, batch.shard_id, records, token)
                durable[name] = engine.durable.checkpoint
                if not work:
                    continue
                shard_work.process(engine, sinks.store, records)
                plan = shard_work.flush(engine, sinks.store, sinks.dead_letters, self.identity)
                durable[name] = engine.durable.checkpoint
                if plan is not None:
                    outcome.rows_written += len(plan.rows)
                    outcome.dead_letters += len(plan.dead_letters)
        except Exception as exc:
            outcome.error = exc
            checkpoints = [
                durable[s.pipeline.name]
                if s.pipeline.name in durable
                else self._stored_checkpoint(s, batch.shard_id)
                for s in self._sinks
            ]
            outcome.retry_from = first_not_durable(records, checkpoints)
            if isinstance(exc, StaleWrite):
                log.error(
                    "shard %s: %s; Lambda retries from %s", batch.shard_id, exc, outcome.retry_from
                )
            else:
                log.exception(
                    "shard %s: batch failed; Lambda retries from %s",
                    batch.shard_id,
                    outcome.retry_from,
                )
        return outcome

    def _stored_checkpoint(self, sinks: PipelineSinks, shard_id: str) -> Position | None:
        """A pipeline the failure kept from the batch: its durable checkpoint, if it can
        be read (else None: the batch is retried whole, which is safe)."""
        try:
            progress = sinks.claims.get(sinks.pipeline.name, self.identity, shard_id)
        except Exception:
            return None
        return None if progress is None else progress.checkpoint

    def _claim(
        self, sinks: PipelineSinks, shard_id: str, records: Sequence[Record], token: str
    ) -> tuple[ShardEngine, bool]:
        """The shard's engine, from its durable progress, and whether it has records to
        apply. Before it applies any, the shard is touched: registered (with its
        siblings, the first time), woken if idle (its watermark lifted to what is final
        now, durably), and marked as in use so the scheduled marker leaves it alone."""
        pipeline, store, claims = sinks.pipeline, sinks.store, sinks.claims
        name = pipeline.name
        for _ in range(3):
            now_ms = int(self._wall_clock() * 1000)
            progress = claims.touch(name, self.identity, shard_id, token, now_ms)
            if progress is not None:
                return ShardEngine(pipeline, progress), True
            progress = claims.get(name, self.identity, shard_id)
            if progress is None:
                register_new_shards(
                    store, pipeline, self.identity, self._list_shards(), invoked=shard_id
                )
                continue
            engine = ShardEngine(pipeline, progress)
            if not engine.idle:
                continue  # registered just now by another invocation: touch it
            done = progress.checkpoint
            if not any(
                (done is None or r.position > done) and r.only_for in (None, name) for r in records
            ):
                return engine, False  # nothing new for it: the shard stays idle
            frontier = shard_work.wake(engine, store, self.identity)
            log.info(
                "shard %s: %s active again; windows ending by %s stay final without it",
                shard_id,
                name,
                frontier,
            )
        raise ClaimLost(f"shard {shard_id}: could not claim it for {name}")


@dataclass
class FinalizeOutcome:
    """One scheduled pass, per pipeline."""

    marks: dict[str, MarkReport] = field(default_factory=dict)
    finals: dict[str, FinalizeReport] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            name: {
                "registered": self.marks[name].registered if name in self.marks else [],
                "idle": self.marks[name].idle if name in self.marks else [],
                "ended": self.marks[name].ended if name in self.marks else [],
                "final_rows": self.finals[name].final_rows if name in self.finals else 0,
                "alerts_sent": self.finals[name].alerts_sent if name in self.finals else 0,
                "error": str(self.errors[name]) if name in self.errors else None,
            }
            for name in (*self.marks, *self.errors)
        }


@dataclass(frozen=True)
class FinalizeTarget:
    """One pipeline for the scheduled pass."""

    sinks: PipelineSinks
    claims: DynamoShardClaims
    finalizer: Finalizer


class FinalizePass:
    """What the scheduled function does each time, for each pipeline of one stream."""

    def __init__(
        self,
        kinesis: KinesisClient,
        stream: str,
        stream_identity: str,
        targets: Sequence[FinalizeTarget],
        list_shards: ShardLister,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self.identity = stream_identity
        self._targets = list(targets)
        self._list_shards = list_shards
        self._wall_clock = wall_clock

    def run(self) -> FinalizeOutcome:
        """Each pipeline in turn; one that fails is reported and does not stop the
        others (its next pass starts where this one stopped: every step is idempotent)."""
        outcome = FinalizeOutcome()
        listed = self._list_shards()
        for target in self._targets:
            pipeline, store = target.sinks.pipeline, target.sinks.store
            name = pipeline.name
            try:
                registered = register_new_shards(store, pipeline, self.identity, listed)
                marks = mark_shards(
                    self._kinesis,
                    self._stream,
                    self.identity,
                    pipeline,
                    store,
                    target.claims,
                    listed,
                    int(self._wall_clock() * 1000),
                )
                marks.registered = registered
                outcome.marks[name] = marks
                outcome.finals[name] = target.finalizer.run_once()
            except Exception as exc:
                log.exception("%s: finalizing failed; the next pass tries again", name)
                outcome.errors[name] = exc
        return outcome
