"""The in-memory store keeps the conditional semantics of the DynamoDB one (design.md
section 4): a row is only replaced by one at least as new, a checkpoint never moves back,
and a horizon never shrinks. A stale or zombie writer gets :class:`StaleWrite`."""

from __future__ import annotations

import pytest

from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.sinks.ports import StaleWrite
from processors.windowing.engine import DeadLetter, Intent, ShardProgress
from processors.windowing.records import Position, Record
from processors.windowing.rows import StoredRow
from processors.windowing.windows import Window

P, S = "page-views", "clickstream"
T0 = 1_795_773_600_000


def row(high: int, key: str = "/a", start: int = T0, shard: str = "s1") -> StoredRow:
    return StoredRow(P, key, Window(start, start + 60_000), shard, Position(high), b"{}")


def test_register_shard_is_idempotent_and_keeps_progress() -> None:
    store = MemoryPartialStore()
    assert store.register_shard(P, S, "s1") == ShardProgress("s1")
    store.write_progress(P, S, ShardProgress("s1", Position(5), T0))
    assert store.register_shard(P, S, "s1").checkpoint == Position(5)
    assert store.register_shard("other", S, "s1") == ShardProgress("s1")


def test_a_row_is_replaced_only_by_one_at_least_as_new() -> None:
    store = MemoryPartialStore()
    store.write_rows([row(5)])
    store.write_rows([row(5)])  # the same write again (a retry) is fine
    store.write_rows([row(7)])
    with pytest.raises(StaleWrite):
        store.write_rows([row(6)])
    assert store.load_rows(P, "s1", [("/a", T0)]) == [row(7)]


def test_the_checkpoint_never_moves_back() -> None:
    store = MemoryPartialStore()
    store.write_progress(P, S, ShardProgress("s1", Position(5)))
    store.write_progress(P, S, ShardProgress("s1", Position(5), ended=True))
    with pytest.raises(StaleWrite):
        store.write_progress(P, S, ShardProgress("s1", Position(4)))
    with pytest.raises(StaleWrite):
        store.write_progress(P, S, ShardProgress("s1", None))
    assert store.read_progress(P) == [ShardProgress("s1", Position(5), ended=True)]


def test_the_intent_raises_the_horizon_and_never_lowers_it() -> None:
    store = MemoryPartialStore()
    store.write_progress(P, S, ShardProgress("s1", Position(5), T0, horizon=T0))
    store.write_intent(P, S, Intent("s1", T0 + 600_000, Position(9)))
    progress = store.register_shard(P, S, "s1")
    assert (progress.checkpoint, progress.horizon) == (Position(5), T0 + 600_000)
    assert progress.dead_letters_through == Position(9)
    with pytest.raises(StaleWrite):
        store.write_intent(P, S, Intent("s1", T0, Position(9)))


def test_loading_returns_only_requested_rows_of_that_shard() -> None:
    store = MemoryPartialStore()
    store.write_rows([row(1, "/a"), row(2, "/b"), row(3, "/a", shard="s2")])
    assert store.load_rows(P, "s1", [("/a", T0), ("/missing", T0)]) == [row(1, "/a")]
    assert store.load_rows(P, "s2", [("/a", T0)]) == [row(3, "/a", shard="s2")]


def test_read_rows_filters_by_key_and_window_start() -> None:
    store = MemoryPartialStore()
    store.write_rows([row(1, "/a", T0), row(2, "/a", T0 + 60_000), row(3, "/b", T0)])
    assert {r.high_water.sequence for r in store.read_rows(P)} == {1, 2, 3}
    assert {r.high_water.sequence for r in store.read_rows(P, "/a")} == {1, 2}
    assert [r.high_water.sequence for r in store.read_rows(P, None, T0 + 1)] == [2]
    assert {r.high_water.sequence for r in store.read_rows(P, None, None, T0 + 1)} == {1, 3}
    assert store.read_rows("other") == []


def test_dead_letters_are_kept_in_order() -> None:
    sink = MemoryDeadLetters()
    record = Record("s1", Position(1), "pk", b"x")
    letters = [DeadLetter("invalid", "bad", P, record), DeadLetter("late", "old", P, record)]
    sink.send(letters[:1])
    sink.send(letters[1:])
    assert sink.letters == letters
