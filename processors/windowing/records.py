"""Records as the core sees them, and their positions within a shard."""

from __future__ import annotations

from typing import NamedTuple

_new = tuple.__new__  # builds NamedTuples without their Python-level __new__

_SEQ_DIGITS = 64
_SUB_DIGITS = 10


class Position(NamedTuple):
    """(sequence number, sub-sequence number): the order of records within one shard.

    Kinesis sequence numbers are decimal strings of up to 56 digits; the sub-sequence
    number orders user records inside a KPL aggregate (0 for plain records).
    """

    sequence: int
    sub: int = 0

    @classmethod
    def parse(cls, sequence_number: str, sub_sequence_number: int = 0) -> Position:
        return _new(cls, (int(sequence_number), sub_sequence_number))

    @property
    def sequence_number(self) -> str:
        return str(self.sequence)

    def storage_key(self) -> str:
        """Fixed-width text whose lexicographic order is the position order."""
        return f"{self.sequence:0{_SEQ_DIGITS}d}.{self.sub:0{_SUB_DIGITS}d}"

    @classmethod
    def from_storage_key(cls, text: str) -> Position:
        sequence, _, sub = text.partition(".")
        return cls(int(sequence), int(sub or 0))


class Record(NamedTuple):
    """One Kinesis record, with where it came from. (A tuple: records are made by the
    million, and a tuple is several times cheaper to build than a frozen dataclass.)"""

    shard_id: str
    position: Position
    partition_key: str
    data: bytes
    arrival_ms: int | None = None
    only_for: str | None = None
    """Set on a redriven record (see :mod:`processors.windowing.redrive_envelope`): the one
    pipeline that takes it; every other pipeline skips it."""
    redrive_id: str | None = None
    """A redriven record's dead letter id: the pipeline counts one copy of it, wherever
    and however often it was put back."""


def make_record(
    shard_id: str,
    sequence: int,
    sub: int,
    partition_key: str,
    data: bytes,
    arrival_ms: int | None = None,
    only_for: str | None = None,
    redrive_id: str | None = None,
) -> Record:
    """A :class:`Record`, built the fast way (readers make them by the million)."""
    return _new(
        Record,
        (
            shard_id,
            _new(Position, (sequence, sub)),
            partition_key,
            data,
            arrival_ms,
            only_for,
            redrive_id,
        ),
    )
