"""The same records through the engine again, in memory, in one uninterrupted pass per shard.

tests/oracle.py can only hold the sketches (``latency_p99``, ``unique_users``) to their
error bounds. But sketch merges are exact, so a run that crashed and restarted must store
bit for bit what one clean run over the same shards stores: this is the exact check for
all six aggregates, which catches an event counted twice or lost in a sketch (a p99 within
1% does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine
from processors.windowing.records import make_record
from processors.windowing.results import merge_rows
from schemas.timestamps import format_iso8601

STREAM = "rerun"


def clean_run(
    shards: Mapping[str, Sequence[tuple[Any, ...]]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, ISO window start) -> aggregate values, from ``shards`` (shard id -> [(sequence
    number, data)] in shard order, as :func:`tests.oracle.read_stream` returns them)."""
    store = MemoryPartialStore()
    for shard_id, records in sorted(shards.items()):
        engine = ShardEngine(PAGE_VIEWS, store.register_shard(PAGE_VIEWS.name, STREAM, shard_id))
        engine.process(
            [
                make_record(shard_id, int(item[0]), item[1] if len(item) == 3 else 0, "", item[-1])
                for item in records
            ],
            lambda keys: [],
        )
        plan = engine.plan_flush()
        store.write_rows(plan.rows)
        if plan.progress is not None:
            store.write_progress(PAGE_VIEWS.name, STREAM, plan.progress)
        engine.confirm_flush(plan)
    results = merge_rows(
        PAGE_VIEWS, store.read_rows(PAGE_VIEWS.name), store.read_progress(PAGE_VIEWS.name)
    )
    return {(r.key, format_iso8601(r.window.start_ms)): r.values for r in results}


def assert_same_as_clean_run(
    stored: list[dict[str, Any]], shards: Mapping[str, Sequence[tuple[Any, ...]]]
) -> None:
    """Every aggregate of every stored window (query --format json) equals the clean run's."""
    expected = clean_run(shards)
    got = {(row["key"], row["window_start"]): row for row in stored}
    assert sorted(got) == sorted(expected), "different (key, window) sets"
    for slot, values in expected.items():
        row = got[slot]
        assert {name: row[name] for name in values} == values, (slot, row, values)
