"""Events applied to a store the way shard runners apply them, without Kinesis: shard
engines flushing in the invariant's order (intent, rows, progress), then the finalizer.

For what reads results and needs many of them quickly and exactly: the tests of queries,
top keys, the HTTP API and the dashboard, and the query benchmark. Pure: the store is
passed in (in memory, or DynamoDB).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from processors.finalizer import Finalizer
from processors.pipeline import Pipeline
from processors.sinks.memory import MemoryAlertSink
from processors.windowing.engine import ShardEngine
from processors.windowing.records import Position, Record

STREAM = "direct-load"


class StoreLoader:
    """One engine per shard of ``pipeline``, flushing into ``store`` after every batch in
    the invariant's order (intent, rows, progress)."""

    def __init__(self, pipeline: Pipeline[Any], store: Any, shards: int) -> None:
        self.pipeline, self.store = pipeline, store
        self.engines = [
            ShardEngine(pipeline, store.register_shard(pipeline.name, STREAM, f"shard-{i:02d}"))
            for i in range(shards)
        ]
        self.next_seq = [1] * shards

    def send(self, shard: int, events: Iterable[dict[str, Any]], ended: bool = False) -> None:
        engine = self.engines[shard]
        records = []
        for event in events:
            data = orjson.dumps(event)
            records.append(Record(engine.shard_id, Position(self.next_seq[shard]), "pk", data))
            self.next_seq[shard] += 1
        name = self.pipeline.name
        engine.process(records, lambda keys: self.store.load_rows(name, engine.shard_id, keys))
        plan = engine.plan_flush(ended=ended)
        if plan.intent is not None:
            self.store.write_intent(name, STREAM, plan.intent)
        self.store.write_rows(plan.rows)
        if plan.progress is not None:
            self.store.write_progress(name, STREAM, plan.progress)
        engine.confirm_flush(plan)

    def end_all(self) -> None:
        for shard in range(len(self.engines)):
            self.send(shard, [], ended=True)

    def finalize(self, wall_clock_s: float = 2_000_000_000) -> None:
        alerts = MemoryAlertSink() if self.pipeline.sinks.alerts else None
        Finalizer(self.pipeline, self.store, alerts, wall_clock=lambda: wall_clock_s).run_once()
