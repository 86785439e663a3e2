"""``make bench`` (second part): ``shardflow replay`` end to end against the plain loop run
as a script, all as whole processes on the same 1,000,000-line file, in rounds.

The headline replays page-views cut to count/sum/min/max (the plain loop's work, which the
goal is stated for; run through :mod:`benchmarks.shardflow_plain`, the shardflow command
with that pipeline registered). The shipped page-views, with its two sketches, is timed in
the same rounds.

    python -m benchmarks.replay [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.dataset import page_view_lines
from benchmarks.pipelines import PLAIN_PAGE_VIEWS, WITH_SKETCHES


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page-views.jsonl"
        path.write_bytes(b"\n".join(page_view_lines(args.events)) + b"\n")
        output = [str(path), "--format", "json"]
        replay = [
            sys.executable,
            "-m",
            "benchmarks.shardflow_plain",
            "replay",
            PLAIN_PAGE_VIEWS.name,
            *output,
        ]
        sketches = [sys.executable, "-m", "shardflow", "replay", WITH_SKETCHES.name, *output]
        plain = [sys.executable, "-m", "benchmarks.plain_script", str(path)]
        run(plain)  # warm the page cache, not counted
        plain_times: list[float] = []
        replay_times: list[float] = []
        sketch_times: list[float] = []
        for _ in range(args.rounds):
            plain_times.append(run(plain))
            replay_times.append(run(replay))
            sketch_times.append(run(sketches))
    ratios = [p / r for p, r in zip(plain_times, replay_times, strict=True)]
    sketch_ratios = [p / s for p, s in zip(plain_times, sketch_times, strict=True)]
    print(
        f"shardflow replay vs the plain loop as a script, {args.events:,} events, "
        f"{args.rounds} rounds of whole processes (JSON output of every window included)"
    )
    rows = [
        ("plain script", plain_times, None),
        ("replay, count/sum/min/max", replay_times, ratios),
        ("replay, with sketches", sketch_times, sketch_ratios),
    ]
    for label, times, speeds in rows:
        line = f"  {label + ':':<27}{statistics.median(times):6.2f} s (median)"
        if speeds is not None:
            line += (
                f", replay/plain speed {statistics.median(speeds):.2f} median, "
                f"{min(speeds):.2f}-{max(speeds):.2f} min-max"
            )
        print(line)
    print("  goal for replay, count/sum/min/max: replay/plain 0.5 or better")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
