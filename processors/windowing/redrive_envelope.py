"""The envelope around a redriven record, so that only the pipeline that rejected it sees it
again. Pure.

Several pipelines may read one stream. Putting a dead letter's bytes back as they were
would make every other pipeline count the event a second time, so ``shardflow
dead-letters --redrive`` wraps them::

    MAGIC  header (compact JSON: {"pipeline": ..., "dead_letter_id": ...})  "\\n"  original bytes

No JSON event can start with ``MAGIC`` (a NUL byte is not JSON), nor can a KPL aggregate
(its magic is ``f3 89 9a c2``). The shard reader unwraps envelopes into a record whose
``data`` is the original bytes and whose ``only_for`` is the pipeline; every other pipeline
skips the record.
"""

from __future__ import annotations

import orjson

MAGIC = b"\x00sfrd1\x00"
"""The first bytes of every envelope (NUL, "sfrd", version 1, NUL)."""

MAX_HEADER_BYTES = 4096
"""An envelope whose header does not end within this many bytes is malformed."""

MALFORMED = "#malformed-envelope"
"""The ``only_for`` of a record whose envelope is broken: no pipeline has this name
(pipeline names cannot contain ``#``), and every pipeline dead-letters the record as
invalid rather than skip it (nothing is dropped silently)."""

_HEADER_END = b"\n"


class MalformedEnvelope(ValueError):
    """Bytes that start with :data:`MAGIC` but are not a whole envelope."""


def wrap(pipeline: str, dead_letter_id: str, data: bytes) -> bytes:
    """``data`` in an envelope addressed to ``pipeline``."""
    header = orjson.dumps({"pipeline": pipeline, "dead_letter_id": dead_letter_id})
    if len(header) > MAX_HEADER_BYTES:
        raise ValueError(f"envelope header of {len(header)} bytes is too long")
    return MAGIC + header + _HEADER_END + data


def is_envelope(data: bytes) -> bool:
    return data.startswith(MAGIC)


def unwrap(data: bytes) -> tuple[str, str, bytes] | None:
    """(pipeline, dead letter id, original bytes), or None when ``data`` is no envelope.

    Raises :class:`MalformedEnvelope` when ``data`` starts with :data:`MAGIC` but its header
    is cut or broken.
    """
    if not data.startswith(MAGIC):
        return None
    start = len(MAGIC)
    end = data.find(_HEADER_END, start, start + MAX_HEADER_BYTES + 1)
    if end < 0:
        raise MalformedEnvelope(
            f"redrive envelope without the end of its header in its first {MAX_HEADER_BYTES} bytes"
        )
    try:
        header = orjson.loads(data[start:end])
    except orjson.JSONDecodeError as exc:
        raise MalformedEnvelope(f"redrive envelope with a header that is not JSON: {exc}") from None
    pipeline = header.get("pipeline") if isinstance(header, dict) else None
    letter = header.get("dead_letter_id") if isinstance(header, dict) else None
    if not isinstance(pipeline, str) or not pipeline or not isinstance(letter, str):
        raise MalformedEnvelope(
            "redrive envelope whose header lacks a pipeline name or a dead letter id"
        )
    return pipeline, letter, data[end + 1 :]


def route(data: bytes) -> tuple[bytes, str | None, str | None]:
    """(the bytes the pipelines decode, the one pipeline they are for or None for all, the
    dead letter id of a redriven record).

    For the shard reader: an envelope gives its original bytes, its pipeline and its id; a
    broken one stays as it is, marked :data:`MALFORMED`.
    """
    try:
        unwrapped = unwrap(data)
    except MalformedEnvelope:
        return data, MALFORMED, None
    if unwrapped is None:
        return data, None, None
    return unwrapped[2], unwrapped[0], unwrapped[1]


def malformed_reason(data: bytes) -> str:
    """Why the envelope in ``data`` is broken (for the dead letter's error)."""
    try:
        unwrap(data)
    except MalformedEnvelope as exc:
        return str(exc)
    return "malformed redrive envelope"
