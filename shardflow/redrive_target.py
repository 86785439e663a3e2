"""Where a redriven event would land, and whether its windows are already final there.

A redriven record goes to the open shard whose hash key range holds the MD5 of its
partition key (:mod:`streams.shard_map`), and that shard's engine decides lateness against
its own watermark (max event time - allowed lateness), which never goes back. An event
whose every window ends at or before that watermark would come straight back as a ``late``
dead letter: final windows never change. So redrive asks first, from what the runner has
made durable (the pipeline's shard progress):

- a registered shard: its watermark; an idle one is lifted to the final frontier when it
  wakes (:meth:`processors.windowing.engine.ShardEngine.plan_wake`), so the higher of both;
- a shard the runner has not registered yet: a child of a split or merge starts at the
  final frontier of the pipeline's shards (what the runner gives it), a shard without
  parents at nothing.

The progress is durable only at each flush, and the watermarks keep moving while the run
lasts: an event whose window closes between this check and its arrival still comes back
late. :class:`Placements` reads it again every :data:`REFRESH_S` seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.pipeline import Pipeline
from processors.windowing.engine import ShardProgress
from processors.windowing.results import final_frontier
from processors.windowing.windows import Window
from streams.shard_map import ShardMap, hash_key_of, list_all_shards

REFRESH_S = 30.0
"""How often a run reads the shards and their progress again."""


class PlacementUnavailable(RuntimeError):
    """The shards or the pipeline's progress cannot be read: redrive cannot tell which
    letters would come back late, so it does not start (or stops)."""


@dataclass(frozen=True)
class Landing:
    shard_id: str
    watermark: int | None
    """Windows ending at or before it are final on that shard (None: none is)."""

    def final_windows(self, windows: Sequence[Window]) -> bool:
        """Whether every one of ``windows`` is already final here."""
        mark = self.watermark
        return mark is not None and all(window.end_ms <= mark for window in windows)


class Placement:
    """The open shards of a stream and the watermarks of one pipeline on them."""

    def __init__(
        self,
        shards: Sequence[Mapping[str, Any]],
        progress: Sequence[ShardProgress],
        allowed_lateness_ms: int,
    ) -> None:
        self._map = ShardMap.from_shards(shards)
        self._children = {
            shard["ShardId"]
            for shard in shards
            if shard.get("ParentShardId") or shard.get("AdjacentParentShardId")
        }
        self._progress = {p.shard_id: p for p in progress}
        self._lateness = allowed_lateness_ms
        self._frontier = final_frontier(progress, allowed_lateness_ms)

    def landing(self, partition_key: str, explicit_hash_key: str | None = None) -> Landing:
        shard_id = self._map.shard_for(hash_key_of(partition_key, explicit_hash_key))
        frontier = self._frontier
        progress = self._progress.get(shard_id)
        if progress is None:
            return Landing(shard_id, frontier if shard_id in self._children else None)
        watermark = progress.watermark(self._lateness)
        if progress.idle_since_ms is not None and frontier is not None:
            watermark = frontier if watermark is None else max(watermark, frontier)
        return Landing(shard_id, watermark)


def placement_loader(
    kinesis: Any, stream: str, store: Any, pipeline: Pipeline[Any]
) -> Callable[[], Placement]:
    """Reads ``stream``'s shards (ListShards) and ``pipeline``'s progress in ``store``
    (:meth:`read_progress`, strongly consistent); raises :class:`PlacementUnavailable`."""

    def load() -> Placement:
        try:
            shards = list_all_shards(kinesis, stream)
        except (ClientError, BotoCoreError) as exc:
            raise PlacementUnavailable(f"cannot list the shards of {stream}: {exc}") from exc
        try:
            progress = store.read_progress(pipeline.name)
        except (ClientError, BotoCoreError) as exc:
            raise PlacementUnavailable(
                f"cannot read {pipeline.name}'s shard progress: {exc}"
            ) from exc
        try:
            return Placement(shards, progress, pipeline.allowed_lateness_ms)
        except ValueError as exc:  # no open shard
            raise PlacementUnavailable(f"{stream}: {exc}") from exc

    return load


class Placements:
    """The current :class:`Placement`, read again every :data:`REFRESH_S` seconds."""

    def __init__(self, load: Callable[[], Placement], clock: Callable[[], float]) -> None:
        self._load = load
        self._clock = clock
        self._current = load()
        self._read_at = clock()

    def current(self) -> Placement:
        """May raise :class:`PlacementUnavailable` when it is time to read again."""
        now = self._clock()
        if now - self._read_at >= REFRESH_S:
            self._current = self._load()
            self._read_at = now
        return self._current
