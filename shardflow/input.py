"""Reading events to produce: JSON-lines files, standard input, synthetic events."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from shardflow.synthetic import synthetic_page_views


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One event to put. ``ref`` says where it came from (a line number) for reports."""

    data: bytes
    partition_key: str
    ref: int = 0


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A file opened for binary reading, or standard input for ``-``."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as handle:
        yield handle


def partition_key_for(line: bytes, field: str) -> str:
    """The event's ``field`` as partition key; lines without it hash to a stable key.

    Lines that are not valid events are still sent: the runner dead-letters them with the
    reason, so nothing is lost between the file and the dead-letter queue.
    """
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        event = None
    if isinstance(event, dict):
        value = event.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)[:256]
    return hashlib.md5(line).hexdigest()


def file_records(stream: BinaryIO, field: str) -> Iterator[OutgoingRecord]:
    """One record per non-blank line; ``ref`` is the line number."""
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield OutgoingRecord(line, partition_key_for(line, field), number)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def synthetic_records(
    count: int | None,
    seed: int,
    field: str,
    *,
    stop: threading.Event | None = None,
    late_fraction: float = 0.0,
    invalid_fraction: float = 0.0,
) -> Iterator[OutgoingRecord]:
    """Synthetic page views stamped with the current time (``produce --synthetic``, the demo).

    ``count=None`` generates until ``stop`` is set (checked before each record). A
    ``late_fraction`` of the events are stamped two minutes back and an
    ``invalid_fraction`` are not valid events; ``ref`` numbers the records from 1.
    """
    generated = synthetic_page_views(
        count,
        _now_ms,
        seed=seed,
        late_fraction=late_fraction,
        invalid_fraction=invalid_fraction,
    )
    for number, event in enumerate(generated, start=1):
        if stop is not None and stop.is_set():
            return
        line = event if isinstance(event, bytes) else orjson.dumps(event)
        yield OutgoingRecord(line, partition_key_for(line, field), number)
