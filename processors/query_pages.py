"""Queries a page at a time: large ranges are read in bounded steps and resumed from an
opaque cursor, by the command line and the HTTP API alike.

Order within a query:

- with keys: by key (sorted), then window start; a page reads one key's windows in time
  chunks, so a page of ``limit`` windows reads about ``limit`` windows' rows;
- without keys: by window start, then key, through the window index (for session
  pipelines: every session overlapping the range, by start, then key).

A cursor names the last window a page returned; the next page starts after it. Results
arriving meanwhile are included if they sort after the cursor, so following pages never
repeats a window and never skips one that existed when the first page was read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processors.pipeline import Pipeline
from processors.query import (
    END_OF_TIME,
    has_index,
    keyed_windows,
    overlapping_starts,
    query_windows,
    sessions_of_keys,
    starting_between,
    window_results,
)
from processors.sinks.ports import PartialStore
from processors.windowing.engine import ShardProgress
from processors.windowing.results import WindowResult
from processors.windowing.windows import HoppingWindows, SessionWindows

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000


class QueryError(ValueError):
    """A query that cannot be answered as asked; the message says what to change."""


class BadCursor(QueryError):
    """A cursor this query did not hand out."""


class RangeTooLarge(QueryError):
    """A range covering more windows than one request reads."""


@dataclass(frozen=True, slots=True)
class Page:
    results: list[WindowResult]
    next_cursor: str | None
    """Pass it back for the next page; None: this was the last."""


def encode_cursor(result: WindowResult) -> str:
    raw = orjson.dumps({"v": 1, "k": result.key, "s": result.window.start_ms})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """(key, window start) of the window a cursor names."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = orjson.loads(raw)
        key, start = body["k"], body["s"]
        if body.get("v") != 1 or not isinstance(key, str) or not isinstance(start, int):
            raise ValueError("not a cursor")
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise BadCursor(
            f"cursor {cursor[:40]!r} is not one a query returned; pass next_cursor "
            "from the previous page unchanged"
        ) from None
    return key, start


def window_step_ms(pipeline: Pipeline[Any]) -> int:
    """How far apart window starts are: the size (tumbling), the step (hopping), the gap
    (session buckets)."""
    windows = pipeline.windows
    if isinstance(windows, HoppingWindows):
        return windows.step_ms
    if isinstance(windows, SessionWindows):
        return windows.gap_ms
    return windows.size_ms


def check_range(
    pipeline: Pipeline[Any], since_ms: int | None, until_ms: int | None, max_windows: int
) -> None:
    """Raise :class:`RangeTooLarge` unless ``[since_ms, until_ms)`` holds at most
    ``max_windows`` window starts of ``pipeline``; an open-ended range is too large."""
    step = window_step_ms(pipeline)
    if since_ms is None or until_ms is None:
        raise RangeTooLarge(
            f"give both ends of the range (since and until): at most {max_windows:,} "
            f"windows of {pipeline.name!r} ({_duration(max_windows * step)}) per request"
        )
    if until_ms < since_ms:
        raise QueryError(f"until ({until_ms}) must not be before since ({since_ms})")
    windows = -(-(until_ms - since_ms) // step)
    if windows > max_windows:
        raise RangeTooLarge(
            f"the range covers {windows:,} windows of {pipeline.name!r} "
            f"({_duration(until_ms - since_ms)}); at most {max_windows:,} "
            f"({_duration(max_windows * step)}) per request: narrow since and until"
        )


def _duration(ms: int) -> str:
    """``7d``, ``90m``, ``1.5h``: the largest unit that fits, at most one decimal."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms / size:,.1f}".removesuffix(".0") + unit
    return f"{ms}ms"


def query_page(
    store: PartialStore,
    pipeline: Pipeline[Any],
    keys: Sequence[str] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page:
    """One page of the windows of ``pipeline`` overlapping ``[since_ms, until_ms)``, of
    ``keys`` (all keys when empty), at most ``limit`` of them."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT:,}, got {limit}")
    after = None if cursor is None else decode_cursor(cursor)
    shards = store.read_progress(pipeline.name)
    if keys:
        results, more = _keyed_page(
            store, pipeline, sorted(set(keys)), since_ms, until_ms, limit, after, shards
        )
    else:
        results, more = _window_page(store, pipeline, since_ms, until_ms, limit, after, shards)
    return Page(results, encode_cursor(results[-1]) if more and results else None)


def iter_pages(
    store: PartialStore,
    pipeline: Pipeline[Any],
    keys: Sequence[str] = (),
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Iterator[Page]:
    """Every page from ``cursor`` on, each read when the previous one is consumed."""
    while True:
        page = query_page(store, pipeline, keys, since_ms, until_ms, limit, cursor)
        yield page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _keyed_page(
    store: PartialStore,
    pipeline: Pipeline[Any],
    keys: list[str],
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    after: tuple[str, int] | None,
    shards: Sequence[ShardProgress],
) -> tuple[list[WindowResult], bool]:
    found: list[WindowResult] = []
    for key in keys:
        if after is not None and key < after[0]:
            continue
        resume = after[1] if after is not None and key == after[0] else None
        if isinstance(pipeline.windows, SessionWindows):
            sessions = keyed_windows(store, pipeline, key, since_ms, until_ms, shards)
            found.extend(r for r in sessions if resume is None or r.window.start_ms > resume)
        else:
            found.extend(
                _key_windows(
                    store, pipeline, key, since_ms, until_ms, resume, limit + 1 - len(found), shards
                )
            )
        if len(found) > limit:
            return found[:limit], True
    return found, False


def _key_windows(
    store: PartialStore,
    pipeline: Pipeline[Any],
    key: str,
    since_ms: int | None,
    until_ms: int | None,
    resume: int | None,
    wanted: int,
    shards: Sequence[ShardProgress],
) -> list[WindowResult]:
    """Up to ``wanted`` windows of one key, from the first starting after ``resume``:
    read in time chunks of ``wanted`` window starts, doubling while they come back
    short (a sparse key, or a range without a start: from the epoch, the chunks reach
    today's windows within about fifteen doublings)."""
    low = 0 if since_ms is None else max(0, since_ms - pipeline.windows.size_ms + 1)
    if resume is not None:
        low = max(low, resume + 1)
    high = END_OF_TIME if until_ms is None else min(END_OF_TIME, until_ms)
    chunk = max(1, wanted) * window_step_ms(pipeline)
    found: list[WindowResult] = []
    while low < high and len(found) < wanted:
        upper = min(high, low + chunk)
        found.extend(starting_between(store, pipeline, key, low, upper, shards))
        low, chunk = upper, chunk * 2
    return found[:wanted]


def _window_page(
    store: PartialStore,
    pipeline: Pipeline[Any],
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    after: tuple[str, int] | None,
    shards: Sequence[ShardProgress],
) -> tuple[list[WindowResult], bool]:
    def later(result: WindowResult) -> bool:
        return after is None or (result.window.start_ms, result.key) > (after[1], after[0])

    if not has_index(store):
        everything = query_windows(store, pipeline, None, since_ms, until_ms)
        ordered = sorted(everything, key=lambda r: (r.window.start_ms, r.key))
        rest = [r for r in ordered if later(r)]
        return rest[:limit], len(rest) > limit
    starts = overlapping_starts(store, pipeline, since_ms, until_ms)
    if isinstance(pipeline.windows, SessionWindows):
        sessions = sessions_of_keys(store, pipeline, starts, since_ms, until_ms, shards)
        rest = sorted((r for r in sessions if later(r)), key=lambda r: (r.window.start_ms, r.key))
        return rest[:limit], len(rest) > limit
    found: list[WindowResult] = []
    for start in starts:
        if after is not None and start < after[1]:
            continue
        found.extend(r for r in window_results(store, pipeline, start, shards) if later(r))
        if len(found) > limit:
            return found[:limit], True
    return found, False
