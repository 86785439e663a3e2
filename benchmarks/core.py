"""``make bench``: the windowing core against the plain loop, side by side in one process.

Both consume the same in-memory lines; the core runs the page-views pipeline through
:class:`ShardEngine` exactly as the runner does (records in batches of 10,000, a flush after
each batch into the in-memory store), and the two results are checked equal first.

    python -m benchmarks.core [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from benchmarks.dataset import page_view_lines
from benchmarks.plain_loop import aggregate
from processors.pipeline import Pipeline
from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import make_record
from processors.windowing.windows import HoppingWindows
from shardflow.cli import tune_garbage_collector

BATCH = 10_000


HOPPING = replace(
    PAGE_VIEWS, name="page-views-hopping", windows=HoppingWindows(size_ms=60_000, step_ms=20_000)
)


def run_core(lines: Sequence[bytes], pipeline: Pipeline[Any] = PAGE_VIEWS) -> MemoryPartialStore:
    store = MemoryPartialStore()
    engine = ShardEngine(pipeline, ShardProgress("shard-0"))
    for offset in range(0, len(lines), BATCH):
        records = [
            make_record("shard-0", offset + index + 1, 0, "", line)
            for index, line in enumerate(lines[offset : offset + BATCH])
        ]
        engine.process(records, lambda keys: [])
        plan = engine.plan_flush()
        store.write_rows(plan.rows)
        if plan.progress is not None:
            store.write_progress(pipeline.name, "bench", plan.progress)
        engine.confirm_flush(plan)
    return store


def check_equal(lines: Sequence[bytes]) -> None:
    expected, _, _ = aggregate(lines)
    store = run_core(lines)
    results = query_windows(store, PAGE_VIEWS)
    got = {(r.key, r.window.start_ms): r.values for r in results}
    assert len(got) == len(expected), (len(got), len(expected))
    for slot, (views, revenue, low, high) in expected.items():
        values = got[slot]
        assert values["views"] == views and values["latency_min"] == low, slot
        assert values["latency_max"] == high and abs(values["revenue"] - revenue) < 1e-6, slot


def timed(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.core", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000, help="events per timed pair")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    tune_garbage_collector()  # the setting the shardflow command runs under

    lines = page_view_lines(args.events)
    size = sum(map(len, lines)) / len(lines)
    print(f"{len(lines):,} page views, {size:.0f} bytes each on average")
    check_equal(lines[: min(len(lines), 100_000)])
    print("core and plain loop agree on the first 100,000 events")

    # Machines here are noisy: time the two loops back to back on the same chunk, many
    # times, and report the median of the pairwise ratios.
    chunks = [lines[i : i + args.chunk] for i in range(0, len(lines), args.chunk)]
    aggregate(chunks[0])  # warm-up, not counted
    run_core(chunks[0])
    ratios, plain_rates, core_rates = [], [], []
    for _ in range(args.passes):
        for chunk in chunks:
            plain = timed(lambda chunk=chunk: aggregate(chunk))  # type: ignore[misc]
            core = timed(lambda chunk=chunk: run_core(chunk))  # type: ignore[misc]
            plain_rates.append(len(chunk) / plain)
            core_rates.append(len(chunk) / core)
            ratios.append(plain / core)
    report("tumbling 60 s, count/sum/min/max", ratios, plain_rates, core_rates, args.chunk)
    print("goal for tumbling: core/plain 0.5 or better")

    # Hopping windows do three times the aggregation work per event; the yardstick stays
    # the tumbling plain loop, so this ratio is what hopping costs against it.
    ratios, plain_rates, core_rates = [], [], []
    for chunk in chunks:
        plain = timed(lambda chunk=chunk: aggregate(chunk))  # type: ignore[misc]
        core = timed(lambda chunk=chunk: run_core(chunk, HOPPING))  # type: ignore[misc]
        plain_rates.append(len(chunk) / plain)
        core_rates.append(len(chunk) / core)
        ratios.append(plain / core)
    report(
        "hopping 60 s every 20 s (3 windows an event)", ratios, plain_rates, core_rates, args.chunk
    )
    return 0


def report(
    label: str, ratios: list[float], plain: list[float], core: list[float], chunk: int
) -> None:
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"{label}: {len(ratios)} pairs of {chunk:,} events")
    print(f"  plain loop: {statistics.median(plain):>10,.0f} events/s (median)")
    print(f"  core:       {statistics.median(core):>10,.0f} events/s (median)")
    print(
        f"  core/plain: {statistics.median(ratios):.2f} median, "
        f"{quartiles[0]:.2f}-{quartiles[2]:.2f} interquartile, "
        f"{min(ratios):.2f}-{max(ratios):.2f} min-max"
    )


if __name__ == "__main__":
    raise SystemExit(main())
