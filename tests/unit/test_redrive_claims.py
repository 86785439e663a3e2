"""Each redriven record counts once: a redrive may put a letter back more than once (a
put whose answer was lost, a redrive that stopped part-way), and the pipeline counts the
first copy a shard applies, wherever the others land and whenever they are read again."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.memory import MemoryPartialStore
from processors.windowing.engine import ShardEngine
from processors.windowing.records import Record, make_record
from processors.windowing.results import merge_rows

NAME = PAGE_VIEWS.name
STREAM = "stream"
T0 = 1_795_000_000_000


def copy(shard: str, seq: int, letter: str) -> Record:
    """A redriven copy of letter ``letter`` (one page view of page ``/<letter>``)."""
    data = orjson.dumps({"event_id": letter, "ts": T0 + 1_000, "page": f"/{letter}"})
    return make_record(shard, seq, 0, "pk", data, T0, NAME, letter)


def ordinary(shard: str, seq: int) -> Record:
    data = orjson.dumps({"event_id": f"o{seq}", "ts": T0 + 2_000, "page": "/plain"})
    return make_record(shard, seq, 0, "pk", data, T0)


def run(
    store: MemoryPartialStore, shard: str, records: Sequence[Record], crash: bool = False
) -> None:
    """The shard's records through a fresh engine (as after a restart), then a flush in the
    runner's order: claims, intent, rows, progress. ``crash`` stops after the rows."""
    engine = ShardEngine(PAGE_VIEWS, store.register_shard(NAME, STREAM, shard))
    engine.process(
        list(records),
        lambda keys: store.load_rows(NAME, shard, keys),
        lambda ids: store.load_redrive_claims(NAME, ids),
    )
    plan = engine.plan_flush()
    store.write_redrive_claims(NAME, shard, plan.redrive_claims)
    if plan.intent is not None:
        store.write_intent(NAME, STREAM, plan.intent)
    store.write_rows(plan.rows)
    if crash:
        return
    if plan.progress is not None:
        store.write_progress(NAME, STREAM, plan.progress)
    engine.confirm_flush(plan)


def views(store: MemoryPartialStore) -> dict[str, int]:
    results = merge_rows(PAGE_VIEWS, store.read_rows(NAME), store.read_progress(NAME))
    return {r.key: r.values["views"] for r in results}


def test_copies_in_one_batch_count_once() -> None:
    store = MemoryPartialStore()
    run(store, "s0", [copy("s0", 1, "a"), ordinary("s0", 2), copy("s0", 3, "a")])
    assert views(store) == {"/a": 1, "/plain": 1}


def test_a_copy_on_another_shard_counts_not_again() -> None:
    store = MemoryPartialStore()
    run(store, "s0", [copy("s0", 1, "a")])
    run(store, "s1", [copy("s1", 7, "a"), copy("s1", 8, "b")])
    assert views(store) == {"/a": 1, "/b": 1}


def test_the_copy_that_counts_still_counts_when_read_again_after_a_crash() -> None:
    store = MemoryPartialStore()
    batch = [copy("s0", 1, "a"), copy("s0", 2, "b"), copy("s0", 3, "a")]
    run(store, "s0", batch, crash=True)  # claims and rows written, checkpoint not moved
    run(store, "s0", batch)
    assert views(store) == {"/a": 1, "/b": 1}


def test_claims_are_kept_per_pipeline() -> None:
    store = MemoryPartialStore()
    run(store, "s0", [copy("s0", 1, "a"), copy("s0", 2, "a")])
    assert set(store.claims) == {(NAME, "a")}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.sampled_from("abcd")), max_size=25),
    st.lists(st.integers(1, 6), min_size=1, max_size=6),
    st.lists(st.booleans(), max_size=12),
)
def test_any_copies_any_batches_any_crashes_count_each_letter_once(
    copies: list[tuple[int, str]], sizes: list[int], crashes: list[bool]
) -> None:
    store = MemoryPartialStore()
    per_shard: dict[str, list[Record]] = {"s0": [], "s1": []}
    for seq, (shard, letter) in enumerate(copies, start=1):
        name = f"s{shard}"
        per_shard[name].append(copy(name, seq, letter))
    crash_points = iter(crashes)
    for shard, records in per_shard.items():
        end = 0
        for size in sizes * len(records):
            if end >= len(records):
                break
            end += size
            # Every run is handed the shard from its start, as a reader after a restart
            # would be: the engine skips what its durable checkpoint covers.
            if next(crash_points, False):
                run(store, shard, records[:end], crash=True)
            run(store, shard, records[:end])
    assert views(store) == {f"/{letter}": 1 for letter in {letter for _, letter in copies}}
