"""What ``shardflow serve``'s JSON endpoints answer, apart from HTTP itself: parameters
parsed and checked, the query layer asked, the answer as a JSON-ready dict.

Every mistake in a request is an :class:`ApiError` with its status and a message that
says what to change; nothing here knows Starlette (shardflow/serve.py does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.pipeline import Pipeline
from processors.query import window_results
from processors.query_pages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    QueryError,
    check_range,
    decode_cursor,
    encode_cursor,
    query_page,
    window_step_ms,
)
from processors.top_query import MAX_K, numeric_aggregates, top_keys, window_start_at
from processors.windowing.engine import MAX_KEY_BYTES
from processors.windowing.results import EVERYTHING, final_frontier
from processors.windowing.windows import HoppingWindows, SessionWindows
from schemas.timestamps import format_iso8601
from shardflow.output import result_dict, top_dict
from shardflow.times import UNITS_MS, BadTime, parse_time

MAX_RANGE_WINDOWS = 10_080
"""Windows one request may cover, per key: a week of one-minute windows."""
DEFAULT_RANGE_MS = UNITS_MS["h"]
MAX_KEYS = 20


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PipelineReader:
    """One pipeline and the store its results are in (or why that store is unusable)."""

    pipeline: Pipeline[Any]
    store: Any
    unavailable: str | None = None


class Api:
    """The read-only queries of the HTTP API over ``readers`` (by pipeline name)."""

    def __init__(self, readers: Mapping[str, PipelineReader], clock: Callable[[], int]) -> None:
        self.readers = dict(readers)
        self.clock = clock

    # -- endpoints ------------------------------------------------------------------

    def pipelines(self) -> dict[str, Any]:
        return {"pipelines": [describe(reader.pipeline) for reader in self.readers.values()]}

    def pipeline(self, name: str) -> dict[str, Any]:
        reader = self._reader(name)
        shards = reader.store.read_progress(name)
        frontier = final_frontier(shards, reader.pipeline.allowed_lateness_ms)
        return {
            **describe(reader.pipeline),
            "shards": len(shards),
            "final_through": _frontier_text(frontier),
        }

    def windows(self, name: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        reader = self._reader(name)
        pipeline = reader.pipeline
        keys = _keys(params)
        now = self.clock()
        until = _time(params, "until", now, default=now)
        since = _time(params, "since", now, default=max(0, until - DEFAULT_RANGE_MS))
        limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = _one(params, "cursor")
        try:
            check_range(pipeline, since, until, MAX_RANGE_WINDOWS)
            page = query_page(reader.store, pipeline, keys, since, until, limit, cursor)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        return {
            "pipeline": name,
            "keys": keys,
            "since": format_iso8601(since),
            "until": format_iso8601(until),
            "windows": [result_dict(result) for result in page.results],
            "next_cursor": page.next_cursor,
        }

    def window(self, name: str, at: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        reader = self._reader(name)
        pipeline = reader.pipeline
        if isinstance(pipeline.windows, SessionWindows):
            raise ApiError(
                400,
                f"{name!r} has session windows, which are per key: no window is shared by "
                "its keys; ask /windows for its sessions",
            )
        start = window_start_at(pipeline, _parse(at, "window", self.clock()))
        limit = _int(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        cursor = _one(params, "cursor")
        after = None
        if cursor is not None:
            try:
                key, cursor_start = decode_cursor(cursor)
            except QueryError as exc:
                raise ApiError(400, str(exc)) from None
            if cursor_start != start:
                raise ApiError(400, "that cursor belongs to another window")
            after = key
        shards = reader.store.read_progress(name)
        results = window_results(reader.store, pipeline, start, shards)
        rest = [r for r in results if after is None or r.key > after]
        page = rest[:limit]
        window = pipeline.windows.window_starting(start)
        return {
            "pipeline": name,
            "window_start": format_iso8601(window.start_ms),
            "window_end": format_iso8601(window.end_ms),
            "final": bool(results) and all(r.final for r in results),
            "keys": len(results),
            "windows": [result_dict(result) for result in page],
            "next_cursor": encode_cursor(page[-1]) if len(rest) > limit else None,
        }

    def top(self, name: str, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        reader = self._reader(name)
        pipeline = reader.pipeline
        by = _one(params, "by")
        if by is None:
            raise ApiError(400, f"say which aggregate to rank by: by=one of {_names(pipeline)}")
        k = _int(params, "k", 10, 1, MAX_K)
        at_text = _one(params, "window")
        at = None if at_text is None else _parse(at_text, "window", self.clock())
        try:
            ranked = top_keys(reader.store, pipeline, by, k, at)
        except QueryError as exc:
            raise ApiError(400, str(exc)) from None
        if ranked is None:
            return {
                "pipeline": name,
                "aggregate": by,
                "window_start": None,
                "window_end": None,
                "final": False,
                "keys": 0,
                "top": [],
            }
        return top_dict(ranked)

    def _reader(self, name: str) -> PipelineReader:
        reader = self.readers.get(name)
        if reader is None:
            known = ", ".join(sorted(self.readers))
            raise ApiError(404, f"unknown pipeline {name[:100]!r}; known pipelines: {known}")
        if reader.unavailable is not None:
            raise ApiError(503, reader.unavailable)
        return reader


def describe(pipeline: Pipeline[Any]) -> dict[str, Any]:
    windows = pipeline.windows
    kind = "tumbling"
    if isinstance(windows, HoppingWindows):
        kind = "hopping"
    elif isinstance(windows, SessionWindows):
        kind = "session"
    rankable = set(numeric_aggregates(pipeline))
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "windows": {
            "kind": kind,
            "size_ms": None if kind == "session" else windows.size_ms,
            "step_ms": window_step_ms(pipeline) if kind != "session" else None,
            "gap_ms": windows.size_ms if kind == "session" else None,
        },
        "allowed_lateness_ms": pipeline.allowed_lateness_ms,
        "aggregates": [
            {
                "name": name,
                "numeric": name in rankable,
                "rankable": name in rankable and kind != "session",
            }
            for name in pipeline.aggregate_names
        ],
    }


def _frontier_text(frontier: int | None) -> str | None:
    if frontier is None:
        return None
    if frontier >= EVERYTHING:
        return "end"
    return format_iso8601(min(frontier, 9_999_999_999_999))


def _names(pipeline: Pipeline[Any]) -> str:
    return ", ".join(numeric_aggregates(pipeline))


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise ApiError(400, f"give {name} once, not {len(values)} times")
    return values[0] if values else None


def _keys(params: Mapping[str, Sequence[str]]) -> list[str]:
    keys = sorted(set(params.get("key") or []))
    if len(keys) > MAX_KEYS:
        raise ApiError(400, f"at most {MAX_KEYS} keys per request, got {len(keys)}")
    for key in keys:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise ApiError(400, f"key {key[:40]!r} is not valid UTF-8") from None
        if size > MAX_KEY_BYTES:
            raise ApiError(
                400, f"a key is at most {MAX_KEY_BYTES} bytes (UTF-8), got one of {size}"
            )
    return keys


def _int(params: Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int) -> int:
    text = _one(params, name)
    if text is None:
        return default
    # Digits only, as the description says: int() also takes "1_0", " +5", other scripts.
    if re.fullmatch(r"-?[0-9]{1,18}", text) is None:
        raise ApiError(400, f"{name} must be a whole number, got {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:,} and {high:,}, got {value}")
    return value


def _time(params: Mapping[str, Sequence[str]], name: str, now: int, default: int) -> int:
    text = _one(params, name)
    return default if text is None else _parse(text, name, now)


def _parse(text: str, name: str, now: int) -> int:
    try:
        return parse_time(text, now)
    except BadTime as exc:
        raise ApiError(400, f"{name}: {exc}") from None
