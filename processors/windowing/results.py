"""Merging partial rows across shards into window results, and deciding finality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processors.pipeline import Pipeline
from processors.windowing.codec import IncompatibleState, decode_states
from processors.windowing.engine import ShardProgress
from processors.windowing.rows import StoredRow
from processors.windowing.windows import Window


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window of one key, merged over every shard that contributed."""

    pipeline: str
    key: str
    window: Window
    final: bool
    values: dict[str, Any]
    shards: int


def is_final(window: Window, shards: Sequence[ShardProgress], allowed_lateness_ms: int) -> bool:
    """True when ``window`` is closed on every shard that can contribute to it.

    A shard that ended (closed after resharding and read to its end) holds nothing open.
    With no known shards nothing is final.
    """
    if not shards:
        return False
    for shard in shards:
        if shard.ended:
            continue
        watermark = shard.watermark(allowed_lateness_ms)
        if watermark is None or watermark < window.end_ms:
            return False
    return True


def merge_rows(
    pipeline: Pipeline[Any], rows: Iterable[StoredRow], shards: Sequence[ShardProgress]
) -> list[WindowResult]:
    """Window results from partial rows, sorted by key, then window start."""
    specs = pipeline.aggregates
    merged: dict[tuple[str, int], tuple[Window, list[Any], int]] = {}
    # A fixed merge order (by shard) gives the same float sums whatever order rows are read in.
    for row in sorted(rows, key=lambda r: (r.key, r.window.start_ms, r.shard_id)):
        states = decode_states(specs, row.state)
        slot = (row.key, row.window.start_ms)
        existing = merged.get(slot)
        if existing is None:
            merged[slot] = (row.window, states, 1)
        else:
            window, current, count = existing
            if window != row.window:
                raise IncompatibleState(
                    f"rows of {pipeline.name!r} for key {row.key!r} disagree on the window "
                    f"starting at {window.start_ms}: the pipeline's windows changed under "
                    "the same name"
                )
            combined = [
                spec.aggregator.merge(a, b)
                for spec, a, b in zip(specs, current, states, strict=True)
            ]
            merged[slot] = (window, combined, count + 1)
    results = []
    for (key, _), (window, states, count) in sorted(merged.items()):
        values = {
            spec.name: spec.aggregator.result(state)
            for spec, state in zip(specs, states, strict=True)
        }
        final = is_final(window, shards, pipeline.allowed_lateness_ms)
        results.append(WindowResult(pipeline.name, key, window, final, values, count))
    return results
