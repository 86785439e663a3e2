"""``make bench`` (third part): memory held by the core. The page-views pipeline runs over
the benchmark's events in chunks, flushing after each (closed windows are released); the
traced memory and the number of open (key, window) rows are sampled after every flush.

    python -m benchmarks.memory [--events N]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from collections.abc import Sequence

from benchmarks.dataset import page_view_lines
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.records import make_record

CHUNK = 50_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.memory", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    lines = page_view_lines(args.events)
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("shard-0"))
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

    print(f"{args.events:,} events in chunks of {CHUNK:,}, memory sampled after each flush")
    for events, rows, held in samples[:: max(1, len(samples) // 8)] + samples[-1:]:
        print(f"  after {events:>9,} events: {rows:>6,} open rows, {held / 2**20:7.2f} MiB held")
    per_row = [held / rows for _, rows, held in samples if rows]
    per_row.sort()
    print(f"bytes per open (key, window) row: median {per_row[len(per_row) // 2]:,.0f}")
    middle = len(samples) // 2
    first = max(s[2] for s in samples[:middle]) / 2**20
    second = max(s[2] for s in samples[middle:]) / 2**20
    print(f"most held: {first:.2f} MiB in the first half, {second:.2f} MiB in the second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
