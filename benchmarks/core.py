"""``make bench``: the windowing core against the plain loop, side by side in one process.

Both consume the same in-memory lines; the core runs page-views through :class:`ShardEngine`
exactly as the runner does (records in batches of 10,000, a flush after each batch into the
in-memory store), and the results are checked equal first. The headline is page-views cut to
count/sum/min/max (the plain loop's work, which the goal is stated for); the shipped
page-views, with its two sketches (p99 latency, distinct users), is timed in the same pairs.

    python -m benchmarks.core [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.dataset import page_view_lines
from benchmarks.pipelines import HOPPING, PLAIN_PAGE_VIEWS, WITH_SKETCHES
from benchmarks.plain_loop import aggregate
from processors.pipeline import Pipeline
from processors.query import query_windows
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import make_record
from shardflow.cli import tune_garbage_collector

BATCH = 10_000


def run_core(
    lines: Sequence[bytes], pipeline: Pipeline[Any] = PLAIN_PAGE_VIEWS
) -> MemoryPartialStore:
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


def check_equal(lines: Sequence[bytes], pipeline: Pipeline[Any]) -> None:
    """The core's count/sum/min/max equal the plain loop's (the sketches have no
    counterpart in the plain loop; tests/ check them)."""
    expected, _, _ = aggregate(lines)
    store = run_core(lines, pipeline)
    results = query_windows(store, pipeline)
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
    for pipeline in (PLAIN_PAGE_VIEWS, WITH_SKETCHES):
        check_equal(lines[: min(len(lines), 100_000)], pipeline)
    print("core (both pipelines) and plain loop agree on the first 100,000 events")

    # Machines here are noisy: time the loops back to back on the same chunk, many times,
    # and report the median of the pairwise ratios. Each chunk is timed as a triple (plain
    # loop, core, core with sketches), so both ratios share the plain loop's timings.
    chunks = [lines[i : i + args.chunk] for i in range(0, len(lines), args.chunk)]
    aggregate(chunks[0])  # warm-up, not counted
    run_core(chunks[0])
    run_core(chunks[0], WITH_SKETCHES)
    plain_rates: list[float] = []
    core_rates: list[float] = []
    sketch_rates: list[float] = []
    ratios: list[float] = []
    sketch_ratios: list[float] = []
    for _ in range(args.passes):
        for chunk in chunks:
            plain = timed(lambda chunk=chunk: aggregate(chunk))  # type: ignore[misc]
            core = timed(lambda chunk=chunk: run_core(chunk))  # type: ignore[misc]
            sketch = timed(lambda chunk=chunk: run_core(chunk, WITH_SKETCHES))  # type: ignore[misc]
            plain_rates.append(len(chunk) / plain)
            core_rates.append(len(chunk) / core)
            sketch_rates.append(len(chunk) / sketch)
            ratios.append(plain / core)
            sketch_ratios.append(plain / sketch)
    report("tumbling 60 s, count/sum/min/max", ratios, plain_rates, core_rates, args.chunk)
    print("goal for tumbling: core/plain 0.5 or better")
    report(
        "tumbling 60 s, with sketches (count/sum/min/max + p99 latency + distinct users)",
        sketch_ratios,
        plain_rates,
        sketch_rates,
        args.chunk,
        core_label="core with sketches",
    )
    print("  (the plain loop computes neither sketch: this ratio is what they cost)")

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
        "hopping 60 s every 20 s (3 windows an event), count/sum/min/max",
        ratios,
        plain_rates,
        core_rates,
        args.chunk,
    )
    return 0


def report(
    label: str,
    ratios: list[float],
    plain: list[float],
    core: list[float],
    chunk: int,
    core_label: str = "core",
) -> None:
    quartiles = statistics.quantiles(ratios, n=4)
    width = max(len("plain loop:"), len(core_label) + 1)
    print(f"{label}: {len(ratios)} pairs of {chunk:,} events")
    print(f"  {'plain loop:':<{width}} {statistics.median(plain):>10,.0f} events/s (median)")
    print(f"  {core_label + ':':<{width}} {statistics.median(core):>10,.0f} events/s (median)")
    print(
        f"  {'core/plain:':<{width}} {statistics.median(ratios):.2f} median, "
        f"{quartiles[0]:.2f}-{quartiles[2]:.2f} interquartile, "
        f"{min(ratios):.2f}-{max(ratios):.2f} min-max"
    )


if __name__ == "__main__":
    raise SystemExit(main())
