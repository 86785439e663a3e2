"""The plain loop as a script, the yardstick for ``shardflow replay`` end to end:
``python -m benchmarks.plain_script FILE``."""

from __future__ import annotations

import sys

from benchmarks.plain_loop import aggregate
from shardflow.cli import tune_garbage_collector


def main() -> int:
    tune_garbage_collector()  # the same collector setting the shardflow command runs under
    with open(sys.argv[1], "rb") as lines:
        windows, invalid, late = aggregate(lines)
    print(f"{len(windows)} windows, {invalid} invalid, {late} late")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
