"""``shardflow replay``: a pipeline over a JSON-lines file, in memory, with no AWS."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, BinaryIO

from processors.pipeline import Pipeline
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import Record, make_record
from processors.windowing.results import WindowResult, merge_rows

REPLAY_SHARD = "replay"
CHUNK = 50_000
"""Lines applied between flushes: each flush encodes every row the chunk touched."""


@dataclass
class ReplayOutcome:
    results: list[WindowResult]
    events: int
    dead_letters: Counter[str]

    def summary_line(self) -> str:
        return (
            f"replayed {self.events} lines: {self.dead_letters.get('invalid', 0)} invalid, "
            f"{self.dead_letters.get('late', 0)} late"
        )


def replay_file(
    pipeline: Pipeline[Any], stream: BinaryIO, chunk_lines: int = CHUNK
) -> ReplayOutcome:
    """The file's lines are one shard, in order; the end of the file ends the shard, so
    every window is final."""
    store = MemoryPartialStore()
    engine = ShardEngine(pipeline, ShardProgress(REPLAY_SHARD))
    dead: Counter[str] = Counter()
    lines = 0

    def flush(ended: bool) -> None:
        plan = engine.plan_flush(ended=ended)
        dead.update(letter.reason for letter in plan.dead_letters)
        store.write_rows(plan.rows)
        if plan.progress is not None:
            store.write_progress(pipeline.name, REPLAY_SHARD, plan.progress)
        engine.confirm_flush(plan)

    chunk: list[Record] = []
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        lines += 1
        chunk.append(make_record(REPLAY_SHARD, number, 0, "", line))
        if len(chunk) >= chunk_lines:
            engine.process(chunk, lambda keys: [])
            chunk = []
            flush(ended=False)
    engine.process(chunk, lambda keys: [])
    flush(ended=True)
    results = merge_rows(
        pipeline, store.read_rows(pipeline.name), store.read_progress(pipeline.name)
    )
    return ReplayOutcome(results, lines, dead)
