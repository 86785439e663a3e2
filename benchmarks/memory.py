"""``make bench`` (third part): memory held by the core. Page-views runs over the
benchmark's events in chunks, flushing after each (closed windows are released); the traced
memory and the number of open (key, window) rows are sampled after every flush. First the
pipeline cut to count/sum/min/max (the headline), then the shipped one, with sketches.

    python -m benchmarks.memory [--events N]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from collections.abc import Sequence
from typing import Any

from benchmarks.dataset import page_view_lines
from benchmarks.pipelines import PLAIN_PAGE_VIEWS, WITH_SKETCHES
from processors.pipeline import Pipeline
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import make_record

CHUNK = 50_000


def measure(pipeline: Pipeline[Any], lines: Sequence[bytes]) -> list[tuple[int, int, int]]:
    """(events so far, open rows, bytes held) after each chunk's flush."""
    engine = ShardEngine(pipeline, ShardProgress("shard-0"))
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    samples: list[tuple[int, int, int]] = []
    for offset in range(0, len(lines), CHUNK):
        records = [
            make_record("shard-0", offset + index + 1, 0, "", line)
            for index, line in enumerate(lines[offset : offset + CHUNK])
        ]
        engine.process(records, lambda keys: [])
        engine.confirm_flush(engine.plan_flush())
        del records
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
        samples.append((offset + CHUNK, engine.open_rows, held))
    tracemalloc.stop()
    return samples


def report(label: str, samples: list[tuple[int, int, int]]) -> None:
    print(f"{label}:")
    for events, rows, held in samples[:: max(1, len(samples) // 8)] + samples[-1:]:
        print(f"  after {events:>9,} events: {rows:>6,} open rows, {held / 2**20:7.2f} MiB held")
    per_row = sorted(held / rows for _, rows, held in samples if rows)
    print(f"  bytes per open (key, window) row: median {per_row[len(per_row) // 2]:,.0f}")
    middle = len(samples) // 2
    first = max(s[2] for s in samples[:middle]) / 2**20
    second = max(s[2] for s in samples[middle:]) / 2**20
    print(f"  most held: {first:.2f} MiB in the first half, {second:.2f} MiB in the second")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.memory", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    lines = page_view_lines(args.events)
    print(f"{args.events:,} events in chunks of {CHUNK:,}, memory sampled after each flush")
    report("count/sum/min/max", measure(PLAIN_PAGE_VIEWS, lines))
    report("with sketches (+ p99 latency, distinct users)", measure(WITH_SKETCHES, lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
