"""The ``shardflow`` command with the benchmark's plain pipeline registered as well, so
``shardflow replay`` can be timed end to end on count/sum/min/max alone:
``python -m benchmarks.shardflow_plain replay page-views-plain FILE``."""

from __future__ import annotations

from benchmarks.pipelines import PLAIN_PAGE_VIEWS
from processors.pipelines import PIPELINES
from shardflow.cli import entry

if __name__ == "__main__":
    PIPELINES[PLAIN_PAGE_VIEWS.name] = PLAIN_PAGE_VIEWS
    entry()
