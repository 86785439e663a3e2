"""In-memory fakes of the ports, with the same conditional semantics as the AWS adapters."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

from processors.alerts import Alert, AlertDeliveryError
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.windowing.engine import DeadLetter, Intent, ShardProgress
from processors.windowing.finals import FinalRow
from processors.windowing.records import Position
from processors.windowing.redrive_claims import Claim
from processors.windowing.rows import RowKey, StoredRow


class MemoryPartialStore:
    """A :class:`~processors.sinks.ports.PartialStore` held in dictionaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rows: dict[tuple[str, str, RowKey], StoredRow] = {}
        self.progress: dict[tuple[str, str], ShardProgress] = {}
        self.streams: dict[tuple[str, str], str] = {}
        self.claims: dict[tuple[str, str], Claim] = {}

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

    def load_redrive_claims(self, pipeline: str, redrive_ids: Sequence[str]) -> dict[str, Claim]:
        with self._lock:
            return {
                i: self.claims[(pipeline, i)] for i in redrive_ids if (pipeline, i) in self.claims
            }

    def write_redrive_claims(
        self, pipeline: str, shard_id: str, claims: Mapping[str, Position]
    ) -> None:
        with self._lock:
            for redrive_id, position in claims.items():
                self.claims.setdefault((pipeline, redrive_id), (shard_id, position))


class MemoryDeadLetters:
    """A :class:`~processors.sinks.ports.DeadLetterSink` that keeps what it is sent."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


class MemoryFinalStore(MemoryPartialStore):
    """A :class:`MemoryPartialStore` that is also a
    :class:`~processors.sinks.ports.FinalStore`; ``expires_at`` values are kept, not acted
    on."""

    def __init__(self) -> None:
        super().__init__()
        self.finals: dict[tuple[str, str, int], FinalRow] = {}
        self.final_expiry: dict[tuple[str, str, int], int | None] = {}
        self.cursors: dict[str, int] = {}
        self.index: dict[tuple[str, int], set[tuple[str, str]]] = {}
        self.top: dict[tuple[str, int, str], list[tuple[str, float]]] = {}
        self.top_counts: dict[tuple[str, int, str], int] = {}
        self.partial_expiry: dict[tuple[str, str, RowKey], int] = {}
        self.sent_alerts: dict[tuple[str, str], Alert] = {}
        self.refused_alerts: dict[tuple[str, str], str] = {}

    def write_rows(self, rows: Sequence[StoredRow]) -> None:
        super().write_rows(rows)
        self.index_rows(rows)

    def backfill_index(self, pipeline: str) -> int:
        rows = self.read_rows(pipeline)
        self.index_rows(rows)
        return len(rows)

    def index_rows(self, rows: Sequence[StoredRow]) -> None:
        with self._lock:
            for row in rows:
                entry = (row.key, row.shard_id)
                self.index.setdefault((row.pipeline, row.window.start_ms), set()).add(entry)

    def finalized_through(self, pipeline: str) -> int | None:
        with self._lock:
            return self.cursors.get(pipeline)

    def set_finalized_through(self, pipeline: str, through: int) -> None:
        with self._lock:
            self.cursors[pipeline] = max(through, self.cursors.get(pipeline, through))

    def window_starts(self, pipeline: str, start_from_ms: int, start_before_ms: int) -> list[int]:
        with self._lock:
            return sorted(
                start
                for name, start in self.index
                if name == pipeline and start_from_ms <= start < start_before_ms
            )

    def window_rows(self, pipeline: str, window_start_ms: int) -> list[StoredRow]:
        with self._lock:
            entries = self.index.get((pipeline, window_start_ms), set())
            slots = [(pipeline, shard, (key, window_start_ms)) for key, shard in entries]
            return [self.rows[slot] for slot in sorted(slots) if slot in self.rows]

    def window_keys(self, pipeline: str, window_start_ms: int) -> list[str]:
        with self._lock:
            return sorted({key for key, _ in self.index.get((pipeline, window_start_ms), ())})

    def latest_window_start(self, pipeline: str, start_before_ms: int) -> int | None:
        with self._lock:
            starts = [
                start for name, start in self.index if name == pipeline and start < start_before_ms
            ]
            return max(starts, default=None)

    def write_finals(self, rows: Sequence[FinalRow], expires_at: int | None) -> list[FinalRow]:
        with self._lock:
            stored = []
            for row in rows:
                slot = (row.pipeline, row.key, row.sort_ms)
                if slot not in self.finals:
                    self.finals[slot] = row
                    self.final_expiry[slot] = expires_at
                stored.append(self.finals[slot])
            return stored

    def read_finals(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
        with_states: bool = True,
    ) -> list[FinalRow]:
        with self._lock:
            return [
                row if with_states else replace(row, state=b"")
                for (name, row_key, start), row in sorted(self.finals.items())
                if name == pipeline
                and (key is None or row_key == key)
                and (start_from_ms is None or start >= start_from_ms)
                and (start_before_ms is None or start < start_before_ms)
            ]

    def write_top_keys(
        self,
        pipeline: str,
        window_start_ms: int,
        window_end_ms: int,
        top: Mapping[str, Sequence[tuple[str, float]]],
        keys: int,
        expires_at: int | None,
    ) -> None:
        with self._lock:
            for aggregate, ranked in top.items():
                self.top[(pipeline, window_start_ms, aggregate)] = list(ranked)
                self.top_counts[(pipeline, window_start_ms, aggregate)] = keys

    def read_top_keys(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> list[tuple[str, float]] | None:
        found = self.read_top(pipeline, window_start_ms, aggregate)
        return None if found is None else found[0]

    def read_top(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> tuple[list[tuple[str, float]], int] | None:
        with self._lock:
            slot = (pipeline, window_start_ms, aggregate)
            if slot not in self.top:
                return None
            return list(self.top[slot]), self.top_counts[slot]

    def expire_partials(self, rows: Sequence[StoredRow], expires_at: int) -> None:
        with self._lock:
            for row in rows:
                self.partial_expiry[(row.pipeline, row.shard_id, row.row_key)] = expires_at

    def unsent_alerts(self, pipeline: str, alert_ids: Sequence[str]) -> set[str]:
        with self._lock:
            return {i for i in alert_ids if (pipeline, i) not in self.sent_alerts}

    def record_alerts_sent(
        self,
        pipeline: str,
        alerts: Sequence[Alert],
        expires_at: int | None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        with self._lock:
            for alert in alerts:
                self.sent_alerts[(pipeline, alert.alert_id)] = alert
                if refused and alert.alert_id in refused:
                    self.refused_alerts[(pipeline, alert.alert_id)] = refused[alert.alert_id]


class MemoryAlertSink:
    """An :class:`~processors.sinks.ports.AlertSink` that keeps what it is sent. With
    ``fail_next`` set, that many calls raise (and keep nothing) before calls succeed again."""

    def __init__(self, fail_next: int = 0) -> None:
        self.published: list[Alert] = []
        self.fail_next = fail_next
        self.calls = 0
        self.refuse_keys: set[str] = set()
        """Alerts of these keys are refused for good (as SNS refuses an invalid one)."""

    def publish(self, alerts: Sequence[Alert]) -> list[tuple[Alert, str]]:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise AlertDeliveryError(f"alert sink failure injected ({len(alerts)} alerts not sent)")
        refused = [(a, "refused by the test") for a in alerts if a.key in self.refuse_keys]
        self.published.extend(a for a in alerts if a.key not in self.refuse_keys)
        return refused
