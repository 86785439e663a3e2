"""Floors under concurrent workers: a wake or a children's registration that reads the
frontier while another worker moves it still ends up at or above every frontier anyone
could have seen (streams/kcl_frontier.py)."""

from __future__ import annotations

from dataclasses import replace

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine, ShardProgress
from processors.windowing.results import final_frontier
from streams.kcl_frontier import register_children, stable_wake

NAME = PAGE_VIEWS.name
LATENESS = PAGE_VIEWS.allowed_lateness_ms
STREAM = "stream"


class RacingStore(MemoryPartialStore):
    """Runs ``race`` (another worker's write) right after this worker's first write of
    ``shard``'s progress."""

    def __init__(self) -> None:
        super().__init__()
        self.race: list[tuple[str, ShardProgress]] = []
        self.watch = ""
        self.seen: list[int | None] = []

    def _after(self, shard_id: str) -> None:
        if shard_id == self.watch and self.race:
            pipeline, progress = self.race.pop(0)
            super().write_progress(pipeline, STREAM, progress)
            # What a finalizer reading now would take as final.
            self.seen.append(final_frontier(self.read_progress(NAME), LATENESS))

    def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None:
        super().write_progress(pipeline, stream, progress)
        self._after(progress.shard_id)

    def register_shard(
        self, pipeline: str, stream: str, shard_id: str, watermark_floor: int | None = None
    ) -> ShardProgress:
        progress = super().register_shard(pipeline, stream, shard_id, watermark_floor)
        self._after(shard_id)
        return progress


def put(store: MemoryPartialStore, shard: str, max_ts: int | None, idle: bool = False) -> None:
    store.register_shard(NAME, STREAM, shard)
    MemoryPartialStore.write_progress(
        store,
        NAME,
        STREAM,
        ShardProgress(shard, max_event_time=max_ts, idle_since_ms=1 if idle else None),
    )


def test_a_wake_raises_its_floor_past_a_frontier_that_moved_in_between() -> None:
    store = RacingStore()
    put(store, "me", 50_000, idle=True)
    put(store, "slow", 100_000)
    put(store, "fast", 500_000)
    engine = ShardEngine(PAGE_VIEWS, store.progress[(NAME, "me")])
    # Between the wake's read (frontier 90 s) and its write, "slow" goes idle: with "me"
    # still idle too, a finalizer could take everything up to 490 s as final.
    store.watch = "me"
    store.race = [(NAME, replace(store.progress[(NAME, "slow")], idle_since_ms=2))]
    floor = stable_wake(engine, store, STREAM)
    assert floor == 490_000 and engine.durable.watermark_floor == 490_000
    assert not engine.idle and store.progress[(NAME, "me")].watermark_floor == 490_000


def test_a_wake_with_nothing_moving_keeps_the_frontier_it_read() -> None:
    store = MemoryPartialStore()
    put(store, "me", 50_000, idle=True)
    put(store, "other", 100_000)
    engine = ShardEngine(PAGE_VIEWS, store.progress[(NAME, "me")])
    assert stable_wake(engine, store, STREAM) == 90_000


def test_children_registered_while_the_frontier_moves_get_the_higher_floor() -> None:
    store = RacingStore()
    put(store, "parent", 300_000)
    put(store, "slow", 100_000)
    put(store, "fast", 500_000)
    store.watch = "child-1"
    store.race = [(NAME, replace(store.progress[(NAME, "slow")], idle_since_ms=2))]
    floor = register_children(store, NAME, LATENESS, STREAM, ["child-1", "child-2"])
    # Read 90 s; meanwhile "slow" went idle and, before the children counted, a reader
    # could see the frontier at min(parent, fast) = 290 s.
    assert store.seen and floor == 290_000
    for child in ("child-1", "child-2"):
        assert store.progress[(NAME, child)].watermark_floor == 290_000


def test_a_child_already_registered_by_the_other_parent_keeps_its_progress() -> None:
    store = MemoryPartialStore()
    put(store, "parent", 300_000)
    store.register_shard(NAME, STREAM, "merged", 120_000)
    assert register_children(store, NAME, LATENESS, STREAM, ["merged"]) == 120_000
    assert store.progress[(NAME, "merged")].watermark_floor == 120_000
