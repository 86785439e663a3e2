"""The dead-letter message body (design.md section 8). Pure."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from processors.windowing.engine import DeadLetter

MAX_BODY_BYTES = 262_144
"""SQS's default maximum message size (256 KiB)."""

MAX_ERROR_CHARS = 2_000
"""Error texts are cut to this length, so a body's size is bounded by its data."""


def dead_letter_id(letter: DeadLetter) -> str:
    """Stable identity of a dead letter: pipeline, shard, sequence number and sub-sequence
    number (two pipelines may each dead-letter the same record, differently)."""
    position = letter.record.position
    return f"{letter.pipeline}:{letter.record.shard_id}:{position.sequence_number}:{position.sub}"


def _bounded(error: str) -> str:
    if len(error) <= MAX_ERROR_CHARS:
        return error
    return error[:MAX_ERROR_CHARS] + f"... (error cut from {len(error)} characters)"


def dead_letter_body(letter: DeadLetter, stream: str) -> dict[str, Any]:
    """The JSON body of a dead letter, with the original bytes in base64."""
    record = letter.record
    body: dict[str, Any] = {
        "dead_letter_id": dead_letter_id(letter),
        "reason": letter.reason,
        "error": _bounded(letter.error),
        "pipeline": letter.pipeline,
        "stream": stream,
        "shard_id": record.shard_id,
        "sequence_number": record.position.sequence_number,
        "sub_sequence_number": record.position.sub,
        "partition_key": record.partition_key,
        "approximate_arrival_ms": record.arrival_ms,
        "data": base64.b64encode(record.data).decode("ascii"),
    }
    if letter.event_time_ms is not None:
        body["event_time_ms"] = letter.event_time_ms
    if letter.window is not None:
        body["window_start_ms"] = letter.window.start_ms
        body["window_end_ms"] = letter.window.end_ms
    if len(letter.missed_windows) > 1:
        body["missed_windows"] = [[w.start_ms, w.end_ms] for w in letter.missed_windows]
    return body


def shrink_to_fit(body: dict[str, Any], encoded_size: int) -> dict[str, Any]:
    """A body over the SQS limit keeps a prefix of its data and says so.

    The full record stays in the stream for its retention period; the body names its
    shard and sequence number, and carries the size and SHA-256 of the original bytes.
    """
    data = base64.b64decode(body["data"])
    keep = max(0, (len(body["data"]) - (encoded_size - MAX_BODY_BYTES) - 1024) * 3 // 4)
    return {
        **body,
        "data": base64.b64encode(data[:keep]).decode("ascii"),
        "data_truncated": True,
        "data_size": len(data),
        "data_sha256": hashlib.sha256(data).hexdigest(),
    }
