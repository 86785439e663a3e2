"""``shardflow ingest``'s request bodies: bytes into events, events into records. Pure.

A body is one JSON event (an object), a JSON array of events, or JSON lines (one event per
non-blank line). ``application/x-ndjson`` and ``application/jsonl`` are JSON lines;
``application/json`` (or no content type) is decided by the first non-space byte: ``[`` is
an array, ``{`` is one event, or JSON lines when the body does not parse as one document
but has several non-blank lines.

Every event is validated with its pipeline's schema before anything is sent: a request is
taken whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from processors.pipeline import Pipeline
from schemas.errors import InvalidEvent
from shardflow.input import partition_key_for
from streams.producer_api import check_record

JSON_TYPES = frozenset({"application/json", ""})
JSON_LINES_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
ACCEPTED_TYPES = ("application/json", *sorted(JSON_LINES_TYPES))

_WHITESPACE = b" \t\r\n"


class BadBody(ValueError):
    """A body that cannot be taken: the HTTP status to answer with, and why."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class Parsed:
    """The events of a body, in order; ``lines`` gives each one's line for JSON lines."""

    events: list[Any]
    lines: list[int] | None = None

    def line_of(self, index: int) -> int | None:
        return None if self.lines is None else self.lines[index]


@dataclass(frozen=True, slots=True)
class Record:
    """One valid event as it goes to Kinesis."""

    data: bytes
    partition_key: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """An event its pipeline rejects (or Kinesis could never take), by index in the body."""

    index: int
    error: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": self.index, "error": self.error}
        if self.line is not None:
            entry["line"] = self.line
        return entry


def media_type(content_type: str | None) -> str:
    """``application/json`` from ``Application/JSON; charset=utf-8``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_body(body: bytes, content_type: str | None, max_events: int) -> Parsed:
    """The events in ``body``; raises :class:`BadBody` (400, 413 or 415)."""
    kind = media_type(content_type)
    if kind not in JSON_TYPES and kind not in JSON_LINES_TYPES:
        raise BadBody(
            415,
            f"unsupported content type {kind!r}; send {', '.join(ACCEPTED_TYPES)}",
            accepted_types=list(ACCEPTED_TYPES),
        )
    stripped = body.lstrip(_WHITESPACE)
    if not stripped:
        raise BadBody(400, "empty body: send one event, an array of events, or JSON lines")
    if kind in JSON_LINES_TYPES:
        return _json_lines(body, max_events)
    if stripped[:1] == b"[":
        return _array(body, max_events)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if len(_non_blank_lines(body)) > 1:
            return _json_lines(body, max_events)
        raise BadBody(400, f"malformed JSON: {exc}", line=exc.lineno) from None
    if not isinstance(document, dict):
        raise BadBody(
            400,
            f"the body is a JSON {_json_kind(document)}: send one event (an object), "
            "an array of events, or JSON lines",
        )
    return Parsed([document])


def _array(body: bytes, max_events: int) -> Parsed:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(400, f"malformed JSON: {exc}", line=exc.lineno) from None
    if not document:
        raise BadBody(400, "empty array: send at least one event")
    _check_count(len(document), max_events)
    return Parsed(document)


def _non_blank_lines(body: bytes) -> list[tuple[int, bytes]]:
    return [
        (number, line)
        for number, line in enumerate(body.split(b"\n"), start=1)
        if line.strip(_WHITESPACE)
    ]


def _json_lines(body: bytes, max_events: int) -> Parsed:
    lines = _non_blank_lines(body)
    if not lines:
        raise BadBody(400, "empty body: send one event, an array of events, or JSON lines")
    _check_count(len(lines), max_events)
    events: list[Any] = []
    numbers: list[int] = []
    for number, line in lines:
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadBody(
                400, f"line {number}: malformed JSON: {exc}; nothing was sent", line=number
            ) from None
        numbers.append(number)
    return Parsed(events, numbers)


def _check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise BadBody(
            413,
            f"{count} events in one request; the limit is {max_events}: split the request",
            max_events=max_events,
        )


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def prepare(
    pipeline: Pipeline[Any], parsed: Parsed, partition_key_field: str
) -> tuple[list[Record], list[Invalid]]:
    """Each event as compact JSON with its partition key, and every event that is not valid.

    An event is valid when ``pipeline.decode`` takes it and Kinesis could take its record
    (at most 1 MiB with the partition key). The partition key is the event's
    ``partition_key_field`` (a string or whole number), else an MD5 of the record, as
    ``shardflow produce`` does.
    """
    records: list[Record] = []
    invalid: list[Invalid] = []
    decode = pipeline.decode
    for index, event in enumerate(parsed.events):
        data = orjson.dumps(event)
        try:
            decode(data)
        except InvalidEvent as exc:
            invalid.append(Invalid(index, str(exc), parsed.line_of(index)))
            continue
        key = partition_key_for(data, partition_key_field)
        problem = check_record(data, key)
        if problem is not None:
            invalid.append(Invalid(index, problem, parsed.line_of(index)))
            continue
        records.append(Record(data, key))
    return records, invalid
