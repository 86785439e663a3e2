"""Partial rows: one shard's contribution to one window of one key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processors.windowing.records import Position
from processors.windowing.windows import Window

RowKey = tuple[str, int]
"""(key, window start): identifies a partial row within one pipeline and shard."""


@dataclass(slots=True)
class PartialRow:
    """In-memory state of a partial row: absolute aggregate states and the highest
    position they include."""

    key: str
    window: Window
    states: list[Any]
    high_water: Position | None = None
    dirty: bool = False
    stored_through: Position | None = None
    """For a row restored from storage: the records it held then, which a replay skips."""


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A partial row as storage holds it; ``state`` is the codec's versioned blob."""

    pipeline: str
    key: str
    window: Window
    shard_id: str
    high_water: Position
    state: bytes

    @property
    def row_key(self) -> RowKey:
        return (self.key, self.window.start_ms)
