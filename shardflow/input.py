"""Reading events to produce: JSON-lines files, standard input, synthetic events."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import orjson

from shardflow.synthetic import synthetic_page_views
from streams.producer import OutgoingRecord


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


def synthetic_records(count: int, seed: int, field: str) -> Iterator[OutgoingRecord]:
    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    for number, event in enumerate(synthetic_page_views(count, now_ms, seed=seed), start=1):
        line = event if isinstance(event, bytes) else orjson.dumps(event)
        yield OutgoingRecord(line, partition_key_for(line, field), number)
