"""The per-shard engine and the exactly-once invariant (design.md sections 3 and 4).

The story, in order:

1. Valid events are aggregated per (key, window); the row carries the highest position
   it includes.
2. Invalid records and late events go to the dead letters with a reason, and are not
   aggregated. Lateness is decided per shard against ``max event time - lateness``.
3. Records at or below the durable checkpoint are ignored; a restarted engine continues
   rows from storage and skips the records a stored row already includes.
4. The property that ties it together: crash anywhere (lose unflushed work, or die in the
   middle of a flush), restart from what is durable, replay, and the store ends up exactly
   as after an uninterrupted run, with the same dead letters.

Flushes here do exactly what ``streams/runner.py`` ``_flush_once`` does: dead letters,
then the intent, then the rows, then the checkpoint, then ``confirm_flush``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dead_letters import dead_letter_id
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.windowing.codec import decode_states
from processors.windowing.engine import (
    REASON_INVALID,
    REASON_LATE,
    FlushPlan,
    ShardEngine,
    ShardProgress,
)
from processors.windowing.records import Position, Record
from processors.windowing.rows import RowKey, StoredRow
from processors.windowing.windows import Window
from schemas.errors import InvalidEvent
from schemas.page_views import decode_page_view
from schemas.timestamps import format_iso8601
from tests.oracle import (
    P99,
    distinct_within_bounds,
    exact_quantile,
    quantile_within_bounds,
)

PIPELINE = PAGE_VIEWS
NAME = PIPELINE.name
STREAM = "clickstream"
SHARD = "shardId-000000000000"
MINUTE = 60_000
LATENESS = PIPELINE.allowed_lateness_ms  # 10 s
T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z, a window start
BASE_SEQUENCE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898


def properties(examples: int) -> settings:
    """Hypothesis settings for the engine properties: no per-example deadline, bounded
    example counts to keep the unit suite fast."""
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


# -- building blocks -------------------------------------------------------------------


def page_view(offset_ms: int, page: str = "/home", **fields: Any) -> bytes:
    """A page view ``offset_ms`` after T0."""
    return orjson.dumps({"event_id": f"e{offset_ms}", "ts": T0 + offset_ms, "page": page, **fields})


def records(*payloads: bytes, first: int = 1, shard: str = SHARD) -> list[Record]:
    """Records with consecutive 56-digit sequence numbers ``BASE + first, ...``."""
    return [
        Record(shard, Position(BASE_SEQUENCE + first + i), f"pk{i}", data)
        for i, data in enumerate(payloads)
    ]


def new_engine(store: MemoryPartialStore, shard: str = SHARD) -> ShardEngine:
    """An engine built the way the runner builds one: from the shard's durable progress."""
    return ShardEngine(PIPELINE, store.register_shard(NAME, STREAM, shard))


def loader(store: MemoryPartialStore, shard: str = SHARD) -> Callable[[Sequence[RowKey]], Any]:
    return lambda keys: store.load_rows(NAME, shard, keys)


class Crash(Exception):
    """The process died here."""


def flush(
    engine: ShardEngine,
    store: MemoryPartialStore,
    letters: MemoryDeadLetters,
    crash_after: str | None = None,
    rows_written: Callable[[list[StoredRow]], list[StoredRow]] = list,
) -> FlushPlan:
    """One flush, step by step as ``EmbeddedRunner._flush_once`` performs it.

    ``crash_after`` names the last step that completes before the process dies:
    ``"dead_letters"``, ``"intent"``, ``"rows"`` (only ``rows_written(rows)`` land) or
    ``"progress"`` (all written, ``confirm_flush`` never runs).
    """
    plan = engine.plan_flush()
    if plan.dead_letters:
        letters.send(plan.dead_letters)
    if crash_after == "dead_letters":
        raise Crash
    if plan.intent is not None:
        store.write_intent(NAME, STREAM, plan.intent)
    if crash_after == "intent":
        raise Crash
    if crash_after == "rows":
        if plan.rows:
            store.write_rows(rows_written(plan.rows))
        raise Crash
    if plan.rows:
        store.write_rows(plan.rows)
    if plan.progress is not None:
        store.write_progress(NAME, STREAM, plan.progress)
    if crash_after == "progress":
        raise Crash
    engine.confirm_flush(plan)
    return plan


def stored_windows(store: MemoryPartialStore, shard: str = SHARD) -> dict[RowKey, dict[str, Any]]:
    """(key, window start) -> aggregate values (results) of ``shard``'s stored rows."""
    return {
        row.row_key: {
            spec.name: spec.aggregator.result(state)
            for spec, state in zip(
                PIPELINE.aggregates, decode_states(PIPELINE.aggregates, row.state), strict=True
            )
        }
        for (_, row_shard, _), row in store.rows.items()
        if row_shard == shard
    }


def near(latency: float) -> Any:
    """latency_p99 as the sketch promises it: within 1% of the true value at its rank."""
    return pytest.approx(latency, rel=0.01)


def assert_same_windows(
    actual: dict[RowKey, dict[str, Any]], expected: dict[RowKey, Any], *, exact_sketches: bool
) -> None:
    """Counts, minima and maxima exactly; sums within 1e-9 relative. The sketches exactly
    when both sides are runs of the engine (sketch merges are exact and the sketch state
    does not depend on the order of its values); against an exact computation, within the
    sketches' documented error."""
    assert sorted(actual) == sorted(expected)
    for slot, want in expected.items():
        got = actual[slot]
        assert got["views"] == want["views"], slot
        assert got["latency_min"] == want["latency_min"], slot
        assert got["latency_max"] == want["latency_max"], slot
        assert math.isclose(got["revenue"], want["revenue"], rel_tol=1e-9, abs_tol=1e-9), slot
        if exact_sketches:
            assert got["latency_p99"] == want["latency_p99"], slot
            assert got["unique_users"] == want["unique_users"], slot
        else:
            assert quantile_within_bounds(got["latency_p99"], want["latency_p99"]), (slot, got)
            assert distinct_within_bounds(got["unique_users"], want["unique_users"]), (slot, got)


# -- 1. aggregation per key and window ---------------------------------------------------


def test_events_are_aggregated_per_key_and_window() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    batch = records(
        page_view(1_000, "/a", value=2, latency_ms=10, user_id="u1"),
        page_view(30_000, "/a", value=3.5, latency_ms=5, user_id="u1"),
        page_view(5_000, "/b"),
        page_view(61_000, "/a", latency_ms=7, user_id="u2"),
    )
    engine.process(batch, loader(store))
    flush(engine, store, letters)

    # The 0.99 quantile of n values is the value at rank floor(0.99 * (n - 1)): of two, the
    # lower one. u1 viewed /a twice in the first minute: one user.
    assert stored_windows(store) == {
        ("/a", T0): {
            "views": 2,
            "revenue": 5.5,
            "latency_min": 5,
            "latency_max": 10,
            "latency_p99": near(5),
            "unique_users": 1,
        },
        ("/b", T0): {
            "views": 1,
            "revenue": 0,
            "latency_min": None,
            "latency_max": None,
            "latency_p99": None,
            "unique_users": 0,
        },
        ("/a", T0 + MINUTE): {
            "views": 1,
            "revenue": 0,
            "latency_min": 7,
            "latency_max": 7,
            "latency_p99": near(7),
            "unique_users": 1,
        },
    }
    high_water = {row.row_key: row.high_water for row in store.rows.values()}
    assert high_water == {
        ("/a", T0): batch[1].position,
        ("/b", T0): batch[2].position,
        ("/a", T0 + MINUTE): batch[3].position,
    }
    assert letters.letters == []
    progress = store.progress[(NAME, SHARD)]
    assert progress.checkpoint == batch[-1].position
    assert progress.max_event_time == T0 + 61_000
    assert engine.watermark == T0 + 61_000 - LATENESS


def test_a_row_is_absolute_not_an_increment() -> None:
    """Two flushes of one window store the running total, not the second batch alone."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(records(page_view(1_000), page_view(2_000)), loader(store))
    flush(engine, store, letters)
    engine.process(records(page_view(3_000), first=3), loader(store))
    flush(engine, store, letters)
    assert stored_windows(store)[("/home", T0)]["views"] == 3


@pytest.mark.parametrize(
    ("value", "total"),
    [(10**19, 3 * 10**19), (1e308, math.inf)],
    ids=["integers beyond 64 bits", "floats overflowing to inf"],
)
def test_extreme_values_neither_stop_the_shard_nor_corrupt_the_row(
    value: float, total: float
) -> None:
    """Valid events whose sum JSON numbers cannot hold still flush, and a restarted
    engine continues the stored row."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(
        records(page_view(1_000, value=value), page_view(2_000, value=value)), loader(store)
    )
    flush(engine, store, letters)
    restarted = new_engine(store)
    restarted.process(records(page_view(3_000, value=value), first=3), loader(store))
    flush(restarted, store, letters)
    assert stored_windows(store)[("/home", T0)]["revenue"] == total


# -- 2. dead letters: invalid and late -------------------------------------------------------


def test_an_invalid_record_is_dead_lettered_and_the_shard_moves_on() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    batch = records(page_view(1_000), b"{not json", page_view(2_000, page=""), page_view(3_000))
    engine.process(batch, loader(store))
    flush(engine, store, letters)

    assert [(letter.reason, letter.record) for letter in letters.letters] == [
        (REASON_INVALID, batch[1]),
        (REASON_INVALID, batch[2]),
    ]
    assert "malformed JSON" in letters.letters[0].error
    assert "page" in letters.letters[1].error
    assert all(letter.pipeline == NAME for letter in letters.letters)
    assert stored_windows(store)[("/home", T0)]["views"] == 2
    assert store.progress[(NAME, SHARD)].checkpoint == batch[-1].position


def test_a_shard_of_only_invalid_records_still_checkpoints() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    batch = records(b"[]", b"null")
    engine.process(batch, loader(store))
    flush(engine, store, letters)
    assert len(letters.letters) == 2
    assert store.rows == {}
    assert store.progress[(NAME, SHARD)].checkpoint == batch[-1].position
    assert store.progress[(NAME, SHARD)].max_event_time is None


@pytest.mark.parametrize(
    ("max_seen", "event", "late"),
    [
        # the window [T0, T0+60s) closes when the watermark (max - 10 s) reaches T0+60s
        pytest.param(69_999, 59_999, False, id="watermark 1 ms before the end: open"),
        pytest.param(70_000, 59_999, True, id="watermark exactly at the end: closed"),
        pytest.param(70_000, 0, True, id="window start, closed"),
        pytest.param(70_000, 60_000, False, id="next window, open"),
        pytest.param(129_999, 60_000, False, id="next window, 1 ms before closing"),
        pytest.param(130_000, 119_999, True, id="next window, closed"),
        pytest.param(65_000, 1_000, False, id="older event inside the lateness"),
        pytest.param(600_000, 599_000, False, id="recent, slightly out of order"),
        pytest.param(600_000, 300_000, True, id="minutes back"),
    ],
)
def test_lateness_is_decided_against_the_shard_watermark(
    max_seen: int, event: int, late: bool
) -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    batch = records(page_view(max_seen, "/first"), page_view(event, "/then"))
    engine.process(batch, loader(store))
    flush(engine, store, letters)

    start = T0 + event - event % MINUTE
    if late:
        (letter,) = letters.letters
        assert letter.reason == REASON_LATE
        assert letter.record == batch[1]
        assert letter.event_time_ms == T0 + event
        assert letter.window == Window(start, start + MINUTE)
        assert "closed" in letter.error
        assert ("/then", start) not in stored_windows(store)
    else:
        assert letters.letters == []
        assert stored_windows(store)[("/then", start)]["views"] == 1


def test_the_watermark_never_goes_back() -> None:
    """An old (but not late) event does not pull the watermark back."""
    store = MemoryPartialStore()
    engine = new_engine(store)
    engine.process(records(page_view(100_000), page_view(95_000)), loader(store))
    assert engine.max_event_time == T0 + 100_000
    assert engine.watermark == T0 + 100_000 - LATENESS


def test_lateness_is_per_shard() -> None:
    """One shard moving on does not make another shard's events late."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    ahead, behind = new_engine(store, "shard-ahead"), new_engine(store, "shard-behind")
    ahead.process(records(page_view(300_000), shard="shard-ahead"), loader(store, "shard-ahead"))
    behind.process(records(page_view(1_000), shard="shard-behind"), loader(store, "shard-behind"))
    flush(ahead, store, letters)
    flush(behind, store, letters)
    assert letters.letters == []
    assert stored_windows(store, "shard-behind") == {
        ("/home", T0): {
            "views": 1,
            "revenue": 0,
            "latency_min": None,
            "latency_max": None,
            "latency_p99": None,
            "unique_users": 0,
        }
    }


def test_closed_windows_leave_memory_after_their_flush() -> None:
    """Once durable and closed, a row is released; the engine's memory stays bounded."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(records(page_view(1_000, "/a"), page_view(2_000, "/b")), loader(store))
    flush(engine, store, letters)
    assert engine.open_rows == 2
    engine.process(records(page_view(200_000, "/a"), first=3), loader(store))
    assert engine.open_rows == 3
    flush(engine, store, letters)
    assert engine.open_rows == 1
    assert sorted(stored_windows(store)) == [("/a", T0), ("/a", T0 + 3 * MINUTE), ("/b", T0)]


# -- 3. checkpoints and restarts ----------------------------------------------------------


def test_records_at_or_below_the_checkpoint_are_ignored() -> None:
    """Kinesis delivers at least once: a re-read of durable records changes nothing."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    batch = records(page_view(1_000), b"bad", page_view(2_000))
    engine.process(batch, loader(store))
    flush(engine, store, letters)

    again = new_engine(store)
    again.process([*batch, *records(page_view(3_000), first=4)], loader(store))
    flush(again, store, letters)
    assert stored_windows(store)[("/home", T0)]["views"] == 3
    assert len(letters.letters) == 1  # the bad record was not dead-lettered twice

    same = new_engine(store)
    same.process(batch, loader(store))
    assert same.plan_flush().empty
    assert not same.has_unflushed


def test_a_restart_continues_rows_from_storage() -> None:
    """A new engine loads the stored row and adds to it, instead of starting it again."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    first = new_engine(store)
    first.process(
        records(
            page_view(1_000, value=1, latency_ms=30, user_id="u1"),
            page_view(2_000, value=2, latency_ms=40, user_id="u2"),
        ),
        loader(store),
    )
    flush(first, store, letters)
    del first  # the process stops; memory is gone

    second = new_engine(store)
    batch = records(page_view(3_000, value=4, latency_ms=10, user_id="u3"), first=3)
    assert second.rows_to_load(batch) == [("/home", T0)]
    second.process(batch, loader(store))
    flush(second, store, letters)
    # The sketches continue too: p99 of [10, 30, 40] is rank floor(0.99 * 2) = 1, 30 (the
    # second batch alone would give 10); three users (the second batch alone has one).
    assert stored_windows(store)[("/home", T0)] == {
        "views": 3,
        "revenue": 7,
        "latency_min": 10,
        "latency_max": 40,
        "latency_p99": near(30),
        "unique_users": 3,
    }


def test_a_restart_skips_what_a_stored_row_already_includes() -> None:
    """A crash after rows were written but before the checkpoint: on replay, each row
    skips the records it already includes, and counts the rest once."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(records(page_view(1_000, "/a"), page_view(2_000, "/b")), loader(store))
    flush(engine, store, letters)  # checkpoint after record 2
    replay = records(page_view(3_000, "/a"), page_view(4_000, "/b"), first=3)
    engine.process(replay, loader(store))
    # only /a's row lands before the crash; /b's row and the checkpoint do not
    with pytest.raises(Crash):
        flush(engine, store, letters, "rows", lambda rows: [r for r in rows if r.key == "/a"])
    assert stored_windows(store)[("/a", T0)]["views"] == 2
    assert store.progress[(NAME, SHARD)].checkpoint == Position(BASE_SEQUENCE + 2)

    restarted = new_engine(store)
    restarted.process([*replay, *records(page_view(5_000, "/a"), first=5)], loader(store))
    flush(restarted, store, letters)
    windows = stored_windows(store)
    assert windows[("/a", T0)]["views"] == 3  # 1, 3 (kept from storage), 5
    assert windows[("/b", T0)]["views"] == 2  # 2, 4 (replayed)


def test_a_fresh_shard_reads_nothing_from_storage() -> None:
    """Without a durable horizon no row of the shard can exist: no load calls."""
    store = MemoryPartialStore()
    engine = new_engine(store)
    calls: list[Sequence[RowKey]] = []
    engine.process(records(page_view(1_000)), lambda keys: calls.append(keys) or [])
    assert calls == []


def test_only_rows_up_to_the_horizon_are_loaded() -> None:
    """The horizon bounds the window starts storage may hold for this shard."""
    progress = ShardProgress(SHARD, Position(BASE_SEQUENCE), T0, horizon=T0 + MINUTE)
    engine = ShardEngine(PIPELINE, progress)
    batch = records(page_view(1_000, "/a"), page_view(61_000, "/a"), page_view(121_000, "/a"))
    assert engine.rows_to_load(batch) == [("/a", T0), ("/a", T0 + MINUTE)]
    engine.restore_rows(engine.rows_to_load(batch), [])  # storage holds neither
    assert engine.rows_to_load(batch) == []  # in memory now
    engine.apply(batch)
    assert {key: row.states[0] for key, row in engine.snapshot().items()} == {
        ("/a", T0): 1,
        ("/a", T0 + MINUTE): 1,
        ("/a", T0 + 2 * MINUTE): 1,
    }


# -- flush plans -----------------------------------------------------------------------


def test_a_flush_plan_lists_its_writes_in_order() -> None:
    engine = ShardEngine(PIPELINE, ShardProgress(SHARD))
    assert engine.plan_flush().empty
    batch = records(page_view(1_000), b"bad")
    engine.process(batch, lambda keys: [])
    plan = engine.plan_flush()
    assert [letter.record for letter in plan.dead_letters] == [batch[1]]
    assert plan.intent is not None
    assert plan.intent.dead_letters_through == batch[1].position
    assert plan.intent.horizon is not None and plan.intent.horizon >= T0 + 1_000
    assert [row.row_key for row in plan.rows] == [("/home", T0)]
    assert plan.progress is not None and plan.progress.checkpoint == batch[1].position
    assert engine.plan_flush() == plan  # planning changes nothing

    engine.confirm_flush(plan)
    assert engine.durable == plan.progress
    assert not engine.has_unflushed
    assert engine.plan_flush().empty


def test_the_end_of_a_shard_is_recorded() -> None:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(records(page_view(1_000)), loader(store))
    flush(engine, store, letters)
    plan = engine.plan_flush(ended=True)
    assert plan.progress is not None and plan.progress.ended
    assert plan.rows == [] and plan.dead_letters == []
    engine.confirm_flush(plan)
    assert engine.durable.ended


# -- 4. the invariant, as properties -------------------------------------------------------

INVALID_PAYLOADS = [
    b"{not json",
    b"[1, 2]",
    b'{"ts": 1795773600000, "page": "/a"}',
    b'{"event_id": "x", "ts": true, "page": "/a"}',
    b'{"event_id": "x", "ts": 1795773600000, "page": ""}',
    b'{"event_id": "x", "ts": 1795773600000, "page": "/a", "latency_ms": -1}',
]
PAGES = ["/a", "/b", "/c"]


@st.composite
def shard_records(draw: st.DrawFn, max_size: int = 40) -> list[Record]:
    """One shard's records in order: event times mostly increasing with jitter, about one
    in ten invalid, about one in ten stamped minutes back (late unless the shard is young),
    some user records of KPL aggregates (same sequence number, rising sub-sequence), users
    from a small pool (so they repeat)."""
    count = draw(st.integers(min_value=0, max_value=max_size))
    clock = T0 + draw(st.integers(min_value=0, max_value=MINUTE - 1))
    sequence, sub = BASE_SEQUENCE, 0
    result = []
    for index in range(count):
        if index and sub < 3 and draw(st.integers(0, 5)) == 0:
            sub += 1
        else:
            sequence += draw(st.integers(min_value=1, max_value=10**20))
            sub = 0
        roll = draw(st.integers(min_value=0, max_value=9))
        if roll == 0:
            data = draw(st.sampled_from(INVALID_PAYLOADS))
        else:
            clock += draw(st.integers(min_value=0, max_value=15_000))
            ts = clock + draw(st.integers(min_value=-12_000, max_value=2_000))
            if roll == 1:
                ts = clock - draw(st.integers(min_value=10_000, max_value=300_000))
            event: dict[str, Any] = {
                "event_id": f"e{index}",
                "ts": format_iso8601(ts) if roll == 2 else ts,
                "page": draw(st.sampled_from(PAGES)),
            }
            value = draw(
                st.one_of(
                    st.none(),
                    st.integers(min_value=-100, max_value=1_000),
                    st.floats(min_value=-1e3, max_value=1e6, allow_nan=False),
                )
            )
            if value is not None:
                event["value"] = value
            latency = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=1e4)))
            if latency is not None:
                event["latency_ms"] = latency
            user = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=30)))
            if user is not None:
                event["user_id"] = f"user-{user}"
            data = orjson.dumps(event)
        result.append(Record(SHARD, Position(sequence, sub), "pk", data))
    return result


@dataclass
class Outcome:
    windows: dict[RowKey, dict[str, Any]]
    high_water: dict[RowKey, Position]
    letters: Counter[tuple[str, str]]  # (dead letter id, reason) -> times sent
    progress: ShardProgress | None


def outcome(store: MemoryPartialStore, letters: MemoryDeadLetters) -> Outcome:
    return Outcome(
        stored_windows(store),
        {row.row_key: row.high_water for row in store.rows.values()},
        Counter((dead_letter_id(letter), letter.reason) for letter in letters.letters),
        store.progress.get((NAME, SHARD)),
    )


def uninterrupted(batch: list[Record]) -> Outcome:
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    engine.process(batch, loader(store))
    flush(engine, store, letters)
    return outcome(store, letters)


def independent_model(batch: list[Record]) -> tuple[dict[RowKey, dict[str, Any]], dict[str, str]]:
    """Design.md section 3 from scratch: windows and dead letters, no engine code. The p99
    and the distinct users are exact (tests/oracle.py's rank convention)."""
    windows: dict[RowKey, dict[str, Any]] = {}
    latencies: dict[RowKey, list[float]] = {}
    users: dict[RowKey, set[str]] = {}
    letters: dict[str, str] = {}
    max_ts: int | None = None
    for record in batch:
        ident = (
            f"{PIPELINE.name}:{record.shard_id}:{record.position.sequence}:{record.position.sub}"
        )
        try:
            event = decode_page_view(record.data)
        except InvalidEvent:
            letters[ident] = REASON_INVALID
            continue
        start = event.ts_ms - event.ts_ms % MINUTE
        if max_ts is not None and start + MINUTE <= max_ts - LATENESS:
            letters[ident] = REASON_LATE
            continue
        max_ts = event.ts_ms if max_ts is None else max(max_ts, event.ts_ms)
        window = windows.setdefault(
            (event.page, start),
            {"views": 0, "revenue": 0, "latency_min": None, "latency_max": None},
        )
        window["views"] += 1
        if event.value is not None:
            window["revenue"] += event.value
        if event.user_id is not None:
            users.setdefault((event.page, start), set()).add(event.user_id)
        if event.latency_ms is not None:
            latencies.setdefault((event.page, start), []).append(event.latency_ms)
            low, high = window["latency_min"], window["latency_max"]
            window["latency_min"] = event.latency_ms if low is None else min(low, event.latency_ms)
            window["latency_max"] = (
                event.latency_ms if high is None else max(high, event.latency_ms)
            )
    for slot, window in windows.items():
        window["latency_p99"] = exact_quantile(latencies.get(slot, []), P99)
        window["unique_users"] = len(users.get(slot, ()))
    return windows, letters


@properties(150)
@given(shard_records())
def test_an_uninterrupted_run_matches_an_independent_computation(batch: list[Record]) -> None:
    expected_windows, expected_letters = independent_model(batch)
    result = uninterrupted(batch)
    assert_same_windows(result.windows, expected_windows, exact_sketches=False)
    assert {ident: reason for (ident, reason) in result.letters} == expected_letters
    assert all(times == 1 for times in result.letters.values())
    if batch:
        assert result.progress is not None
        assert result.progress.checkpoint == batch[-1].position


CRASHES = ["lose", "dead_letters", "intent", "rows", "progress"]


@properties(300)
@given(batch=shard_records(), data=st.data())
def test_crashes_anywhere_store_exactly_what_an_uninterrupted_run_stores(
    batch: list[Record], data: st.DataObject
) -> None:
    """The central invariant. Records arrive in batches; after each batch the runner may
    carry on, flush, lose its memory without flushing, or die in the middle of a flush.
    A new engine starts from the durable progress and the stream is read again from the
    checkpoint (sometimes from further back: redelivery is at least once)."""
    store, letters = MemoryPartialStore(), MemoryDeadLetters()
    engine = new_engine(store)
    may_repeat: set[str] = set()  # dead letters sent by a flush that died before its intent
    cursor, crashes = 0, 0
    while cursor < len(batch):
        size = data.draw(st.integers(min_value=1, max_value=8), label="batch size")
        engine.process(batch[cursor : cursor + size], loader(store))
        cursor += size
        choices = ["carry on", "flush", *(CRASHES if crashes < 5 else [])]
        action = data.draw(st.sampled_from(choices), label="then")
        if action == "carry on":
            continue
        if action == "flush":
            flush(engine, store, letters)
            continue
        if action != "lose":
            pending = engine.plan_flush().dead_letters
            keep = data.draw(st.lists(st.booleans(), max_size=12), label="rows that land")
            with pytest.raises(Crash):
                flush(engine, store, letters, action, lambda rows, keep=keep: _pick(rows, keep))
            if action == "dead_letters":
                may_repeat.update(dead_letter_id(letter) for letter in pending)
        crashes += 1
        engine = new_engine(store)  # what survives is only what the store holds
        checkpoint = engine.durable.checkpoint
        resume = next(
            (i for i, r in enumerate(batch) if checkpoint is None or r.position > checkpoint),
            len(batch),
        )
        cursor = data.draw(st.integers(min_value=max(0, resume - 5), max_value=resume), "from")
    flush(engine, store, letters)

    expected = uninterrupted(batch)
    result = outcome(store, letters)
    event(f"crashes: {crashes}")
    event(f"late dead letters: {sum(reason == REASON_LATE for _, reason in expected.letters)}")
    event(f"dead letters sent twice: {sum(times > 1 for times in result.letters.values())}")
    assert_same_windows(result.windows, expected.windows, exact_sketches=True)
    assert result.high_water == expected.high_water
    assert set(result.letters) == set(expected.letters)
    repeated = {ident for (ident, _), times in result.letters.items() if times > 1}
    assert repeated <= may_repeat
    if batch:
        assert result.progress is not None and expected.progress is not None
        assert result.progress.checkpoint == expected.progress.checkpoint
        assert result.progress.max_event_time == expected.progress.max_event_time


def _pick(rows: list[StoredRow], keep: list[bool]) -> list[StoredRow]:
    """The rows of a batch write that landed before the crash (any subset)."""
    return [row for row, landed in zip(rows, keep, strict=False) if landed]


@st.composite
def events_within_lateness_groups(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Event times in groups, each group spanning at most the allowed lateness, groups in
    time order. Returns the events in time order and the same events with every group
    shuffled: within a group, no event can make another late."""
    times = sorted(
        draw(st.lists(st.integers(min_value=0, max_value=10 * MINUTE), min_size=1, max_size=30))
    )
    groups: list[list[int]] = []
    for ts in times:
        if groups and ts - groups[-1][0] <= LATENESS:
            groups[-1].append(ts)
        else:
            groups.append([ts])
    ordered: list[bytes] = []
    shuffled: list[bytes] = []
    for group in groups:
        events = [
            page_view(
                ts,
                draw(st.sampled_from(PAGES)),
                value=draw(st.floats(min_value=0, max_value=1e4)),
                latency_ms=draw(st.integers(min_value=0, max_value=5_000)),
                user_id=f"user-{draw(st.integers(min_value=0, max_value=20))}",
            )
            for ts in group
        ]
        ordered.extend(events)
        shuffled.extend(draw(st.permutations(events)))
    return ordered, shuffled


@properties(150)
@given(events_within_lateness_groups())
def test_order_within_the_lateness_does_not_change_the_aggregates(
    events: tuple[list[bytes], list[bytes]],
) -> None:
    ordered, shuffled = events
    in_order, out_of_order = uninterrupted(records(*ordered)), uninterrupted(records(*shuffled))
    assert not in_order.letters and not out_of_order.letters
    assert_same_windows(out_of_order.windows, in_order.windows, exact_sketches=True)
    assert sum(w["views"] for w in in_order.windows.values()) == len(ordered)
