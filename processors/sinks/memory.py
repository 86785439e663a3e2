"""In-memory fakes of the ports, with the same conditional semantics as the AWS adapters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.windowing.engine import DeadLetter, Intent, ShardProgress
from processors.windowing.rows import RowKey, StoredRow


class MemoryPartialStore:
    """A :class:`~processors.sinks.ports.PartialStore` held in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str, RowKey], StoredRow] = {}
        self.progress: dict[tuple[str, str], ShardProgress] = {}
        self.streams: dict[tuple[str, str], str] = {}

    def register_shard(
        self, pipeline: str, stream: str, shard_id: str, watermark_floor: int | None = None
    ) -> ShardProgress:
        with self._lock:
            stored = self.streams.setdefault((pipeline, shard_id), stream)
            if stored != stream:
                raise StreamMismatch(pipeline, stored, stream)
            return self.progress.setdefault(
                (pipeline, shard_id), ShardProgress(shard_id, watermark_floor=watermark_floor)
            )

    def write_intent(self, pipeline: str, stream: str, intent: Intent) -> None:
        with self._lock:
            current = self.progress.get((pipeline, intent.shard_id), ShardProgress(intent.shard_id))
            if (
                current.horizon is not None
                and intent.horizon is not None
                and intent.horizon < current.horizon
            ):
                raise StaleWrite(f"horizon of {pipeline}/{intent.shard_id} would move back")
            self.progress[(pipeline, intent.shard_id)] = replace(
                current, horizon=intent.horizon, dead_letters_through=intent.dead_letters_through
            )

    def load_rows(self, pipeline: str, shard_id: str, keys: Sequence[RowKey]) -> list[StoredRow]:
        with self._lock:
            return [
                self.rows[(pipeline, shard_id, key)]
                for key in keys
                if (pipeline, shard_id, key) in self.rows
            ]

    def write_rows(self, rows: Sequence[StoredRow]) -> None:
        with self._lock:
            for row in rows:
                slot = (row.pipeline, row.shard_id, row.row_key)
                stored = self.rows.get(slot)
                if stored is not None and stored.high_water > row.high_water:
                    raise StaleWrite(
                        f"row {row.key}@{row.window.start_ms} of {row.shard_id} holds "
                        f"{stored.high_water}, newer than {row.high_water}"
                    )
                self.rows[slot] = row

    def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None:
        with self._lock:
            current = self.progress.get((pipeline, progress.shard_id))
            if (
                current is not None
                and current.checkpoint is not None
                and (progress.checkpoint is None or progress.checkpoint < current.checkpoint)
            ):
                raise StaleWrite(f"checkpoint of {pipeline}/{progress.shard_id} would move back")
            self.progress[(pipeline, progress.shard_id)] = progress

    def read_rows(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
    ) -> list[StoredRow]:
        with self._lock:
            return [
                row
                for (row_pipeline, _, _), row in self.rows.items()
                if row_pipeline == pipeline
                and (key is None or row.key == key)
                and (start_from_ms is None or row.window.start_ms >= start_from_ms)
                and (start_before_ms is None or row.window.start_ms < start_before_ms)
            ]

    def read_progress(self, pipeline: str) -> list[ShardProgress]:
        with self._lock:
            return [p for (name, _), p in self.progress.items() if name == pipeline]


class MemoryDeadLetters:
    """A :class:`~processors.sinks.ports.DeadLetterSink` that keeps what it is sent."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)
