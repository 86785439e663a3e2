"""Queries through the window index, page by page (processors/query.py, query_pages.py).

The story: shards write partial rows and the finalizer turns final windows into final
rows at random moments. Whatever the moment, reading through the window index gives what
merging every partial row gives (the scan the index replaces), also once the partial rows
of final windows have expired; and reading page by page, with any page size and range,
gives the same windows as reading the range whole, each once, in the documented order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.finalizer import Finalizer
from processors.query import query_windows
from processors.query_pages import (
    BadCursor,
    QueryError,
    RangeTooLarge,
    check_range,
    decode_cursor,
    encode_cursor,
    iter_pages,
    query_page,
)
from processors.sinks.memory import MemoryFinalStore
from processors.windowing.engine import ShardProgress
from processors.windowing.results import WindowResult
from processors.windowing.rows import StoredRow
from processors.windowing.windows import HoppingWindows, SessionWindows, TumblingWindows
from tests.unit.test_finalizer import NOW_S, WINDOW_KINDS, Shards, events_strategy, pipeline


class ScanOnly:
    """The store as a bare partial store: no index, no final rows (queries scan)."""

    def __init__(self, store: MemoryFinalStore) -> None:
        self._store = store

    def read_progress(self, pipeline: str) -> list[ShardProgress]:
        return self._store.read_progress(pipeline)

    def read_rows(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
    ) -> list[StoredRow]:
        return self._store.read_rows(pipeline, key, start_from_ms, start_before_ms)


def as_tuples(results: list[WindowResult]) -> list[tuple[Any, ...]]:
    return [(r.key, r.window, r.final, r.values) for r in results]


def expire_finalized_partials(store: MemoryFinalStore, name: str) -> None:
    """What DynamoDB's TTL does an hour after the finalizer passed: partial rows of
    windows behind its cursor are gone (their index entries stay)."""
    through = store.finalized_through(name)
    if through is None:
        return
    for slot in [s for s in store.rows if s[0] == name and s[2][1] < through]:
        del store.rows[slot]


def fill(
    kind: str, events: list[tuple[int, str, int, int]], passes: list[bool]
) -> tuple[Any, MemoryFinalStore, Finalizer]:
    pipe = pipeline(WINDOW_KINDS[kind])
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 3)
    finalizer = Finalizer(pipe, store, None, wall_clock=lambda: NOW_S)
    runs = iter(passes)
    for shard, key, ts, value in events:
        shards.send(shard, [(key, ts, value)])
        if next(runs, False):
            finalizer.run_once()
    return pipe, store, finalizer


bounds = st.one_of(st.none(), st.integers(0, 160))


@pytest.mark.parametrize("kind", list(WINDOW_KINDS))
@settings(max_examples=80, deadline=None)
@given(
    events=events_strategy,
    passes=st.lists(st.booleans(), max_size=60),
    since=bounds,
    until=bounds,
    key=st.sampled_from([None, "a", "b"]),
)
def test_the_index_reads_what_a_scan_of_every_partial_row_reads(
    kind: str,
    events: list[tuple[int, str, int, int]],
    passes: list[bool],
    since: int | None,
    until: int | None,
    key: str | None,
) -> None:
    pipe, store, finalizer = fill(kind, events, passes)
    scanned = as_tuples(query_windows(ScanOnly(store), pipe, key, since, until))  # type: ignore[arg-type]
    assert as_tuples(query_windows(store, pipe, key, since, until)) == scanned

    # An hour after the finalizer passed, the partial rows of final windows are gone;
    # the final rows answer for them.
    finalizer.run_once()
    before = as_tuples(query_windows(store, pipe, key, since, until))
    expire_finalized_partials(store, pipe.name)
    assert as_tuples(query_windows(store, pipe, key, since, until)) == before


@pytest.mark.parametrize("kind", list(WINDOW_KINDS))
@settings(max_examples=80, deadline=None)
@given(
    events=events_strategy,
    passes=st.lists(st.booleans(), max_size=60),
    since=bounds,
    until=bounds,
    keys=st.lists(st.sampled_from("abcz"), max_size=3),
    limit=st.integers(1, 7),
    expire=st.booleans(),
)
def test_pages_hold_every_window_of_the_range_once_in_order(
    kind: str,
    events: list[tuple[int, str, int, int]],
    passes: list[bool],
    since: int | None,
    until: int | None,
    keys: list[str],
    limit: int,
    expire: bool,
) -> None:
    pipe, store, _ = fill(kind, events, passes)
    if expire:
        expire_finalized_partials(store, pipe.name)
    whole = query_windows(store, pipe, None, since, until)
    if keys:
        expected = [r for r in whole if r.key in keys]  # by key, then start
    else:
        expected = sorted(whole, key=lambda r: (r.window.start_ms, r.key))
    pages = list(iter_pages(store, pipe, keys, since, until, limit))
    assert all(len(page.results) <= limit for page in pages)
    assert all(page.next_cursor is not None for page in pages[:-1])
    assert pages[-1].next_cursor is None
    paged = [result for page in pages for result in page.results]
    assert as_tuples(paged) == as_tuples(expected)
    # The same pages without the index (a scan), in the same order.
    scan_pages = iter_pages(ScanOnly(store), pipe, keys, since, until, limit)  # type: ignore[arg-type]
    if not expire:
        assert as_tuples([r for page in scan_pages for r in page.results]) == as_tuples(expected)


def test_a_page_resumes_after_its_cursor_even_when_new_windows_arrived() -> None:
    pipe = pipeline(TumblingWindows(10))
    store = MemoryFinalStore()
    shards = Shards(pipe, store, 2)
    shards.send(0, [("a", 1, 1), ("a", 11, 1), ("b", 21, 1)])
    first = query_page(store, pipe, (), None, None, 2)
    assert [(r.key, r.window.start_ms) for r in first.results] == [("a", 0), ("a", 10)]
    shards.send(1, [("c", 12, 1), ("0", 3, 1)])  # after the cursor, and before it
    rest = query_page(store, pipe, (), None, None, 2, first.next_cursor)
    assert [(r.key, r.window.start_ms) for r in rest.results] == [("c", 10), ("b", 20)]
    assert rest.next_cursor is None


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    pipe, store, _ = fill("tumbling", [(0, "a/b c", 1, 1)], [])
    (result,) = query_windows(store, pipe)
    assert decode_cursor(encode_cursor(result)) == ("a/b c", 0)
    for bad in ["", "nonsense", "e30", encode_cursor(result)[:-3] + "!!!"]:
        with pytest.raises(BadCursor, match="not one a query returned"):
            query_page(store, pipe, (), None, None, 10, bad)


def test_page_sizes_outside_the_limits_are_refused() -> None:
    pipe, store, _ = fill("tumbling", [], [])
    for limit in (0, 10_001):
        with pytest.raises(QueryError, match="limit must be between 1 and 10,000"):
            query_page(store, pipe, (), None, None, limit)


def test_a_range_too_large_for_one_request_says_how_large_it_may_be() -> None:
    minute = pipeline(TumblingWindows(60_000))
    check_range(minute, 0, 10_080 * 60_000, 10_080)  # exactly a week of minutes
    with pytest.raises(RangeTooLarge, match=r"covers 10,081 windows .* at most 10,080 \(7d\)"):
        check_range(minute, 0, 10_081 * 60_000, 10_080)
    with pytest.raises(RangeTooLarge, match="give both ends"):
        check_range(minute, None, 60_000, 10_080)
    check_range(minute, 60_000, 60_000, 10_080)  # an empty range
    with pytest.raises(QueryError, match="must not be before since"):
        check_range(minute, 60_000, 59_999, 10_080)
    hopping = pipeline(HoppingWindows(60_000, 10_000))
    with pytest.raises(RangeTooLarge, match="covers 7 windows"):
        check_range(hopping, 0, 61_000, 6)
    sessions = pipeline(SessionWindows(30_000))
    check_range(sessions, 0, 60_000, 2)


def test_a_key_without_a_final_row_behind_the_cursor_is_still_read() -> None:
    """Rows can land in a window the finalizer has passed when a pipeline's lateness is
    raised under the same name (to redrive fixes, say): they have no final row, and
    queries still merge them, with the key and without."""
    short = pipeline(TumblingWindows(10), lateness=1)
    store = MemoryFinalStore()
    shards = Shards(short, store, 1)
    shards.send(0, [("a", 1, 1), ("a", 30, 1)])
    Finalizer(short, store, None, wall_clock=lambda: NOW_S).run_once()
    assert store.finalized_through(short.name) == 20
    # A row for key b in that window, as a runner with more lateness would write it.
    elsewhere = MemoryFinalStore()
    Shards(pipeline(TumblingWindows(10), lateness=100), elsewhere, 1).send(0, [("b", 2, 5)])
    store.write_rows(elsewhere.read_rows(short.name))
    assert [(r.key, r.values["total"]) for r in query_windows(store, short, None, 0, 10)] == [
        ("a", 1),
        ("b", 5),
    ]
    assert [r.values["total"] for r in query_windows(store, short, "b", 0, 10)] == [5]
