"""Records as the core sees them, and their positions within a shard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

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
        return cls(int(sequence_number), sub_sequence_number)

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


@dataclass(frozen=True, slots=True)
class Record:
    """One Kinesis record, with where it came from."""

    shard_id: str
    position: Position
    partition_key: str
    data: bytes
    arrival_ms: int | None = None
