"""``make bench`` (second part): ``shardflow replay`` end to end against the plain loop run
as a script, both as whole processes on the same 1,000,000-line file, alternating.

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
        replay = [
            sys.executable,
            "-m",
            "shardflow",
            "replay",
            "page-views",
            str(path),
            "--format",
            "json",
        ]
        plain = [sys.executable, "-m", "benchmarks.plain_script", str(path)]
        run(plain)  # warm the page cache, not counted
        ratios, replay_times, plain_times = [], [], []
        for _ in range(args.rounds):
            plain_time = run(plain)
            replay_time = run(replay)
            plain_times.append(plain_time)
            replay_times.append(replay_time)
            ratios.append(plain_time / replay_time)
    print(
        f"shardflow replay vs the plain loop as a script, {args.events:,} events, "
        f"{args.rounds} pairs of whole processes"
    )
    print(f"  plain script:     {statistics.median(plain_times):6.2f} s (median)")
    print(
        f"  shardflow replay: {statistics.median(replay_times):6.2f} s (median), "
        "JSON output of every window included"
    )
    print(
        f"  replay/plain speed: {statistics.median(ratios):.2f} median, "
        f"{min(ratios):.2f}-{max(ratios):.2f} min-max (goal: 0.5 or better)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
