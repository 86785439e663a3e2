"""The finalizer: final rows for final windows, then their alerts, exactly once in effect.

One pass, per pipeline, in this order (each step is idempotent, so a crash anywhere is
repaired by the next pass, on this worker or another):

1. read the shards' progress (strongly consistent) and the final frontier it gives;
2. read, through the window index, the partial rows of the windows between the cursor
   and the frontier, a batch of windows at a time;
3. write the final rows (a row that exists is kept as stored: two finalizers write it
   once, and a replayed pass alerts on what was stored);
4. write the top keys of each final window;
5. publish the alerts of breached rules that have no sent record, then record them
   (a crash between the two republishes them with the same ``alert_id``);
6. let the covered partial rows expire, and move the cursor past the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from processors.alerts import Alert, alerts_for
from processors.pipeline import Pipeline
from processors.sinks.ports import AlertSink, FinalStore
from processors.windowing.engine import ShardProgress
from processors.windowing.finals import (
    END_OF_STARTS,
    FinalRow,
    final_result,
    plan_step,
    top_keys,
)
from processors.windowing.results import final_frontier
from processors.windowing.rows import StoredRow
from processors.windowing.windows import HoppingWindows, SessionWindows, Windows

log = logging.getLogger("shardflow.finalizer")

WINDOWS_PER_STEP = 64
ROWS_PER_STEP = 20_000
"""A step reads whole windows until it holds this many partial rows or windows; the
cursor moves after each step, so a backlog is worked off in bounded memory."""

TOP_KEYS = 100
"""Keys kept per aggregate in a final window's top-keys item."""

MAX_ROWS_HELD = 200_000
"""A pass stops growing its step here when an open session spans it all."""

ALERTS_PER_RECORD = 10
"""Alerts published (one PublishBatch) and then recorded as sent together."""

PARTIAL_RETENTION_S = 3_600
"""Partial rows of final windows expire this long after their final row is written (a
query that read progress just before may still be reading them)."""


class _Store(FinalStore, Protocol):
    def read_progress(self, pipeline: str) -> list[ShardProgress]: ...


@dataclass
class FinalizeReport:
    """What one pass (or, summed, a run) did."""

    final_rows: int = 0
    windows: int = 0
    alerts_sent: int = 0
    alerts_already_sent: int = 0
    alerts_refused: int = 0
    through: int | None = None
    skipped: bool = False
    """Nothing could have become final since the last complete pass, so none was made."""
    alerts: list[Alert] = field(default_factory=list)


def _end_step(windows: Windows) -> int:
    """Window ends are multiples of this: finality changes only when the frontier
    crosses one."""
    if isinstance(windows, HoppingWindows):
        return windows.step_ms
    return windows.size_ms


class Finalizer:
    """Writes final rows and sends alerts for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline[Any],
        store: _Store,
        alert_sink: AlertSink | None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if pipeline.sinks.alerts and alert_sink is None:
            raise ValueError(f"pipeline {pipeline.name!r} has alert rules but no alert sink")
        self.pipeline = pipeline
        self._store = store
        self._alerts = alert_sink
        self._wall_clock = wall_clock
        self._written: set[tuple[str, int]] = set()
        """(key, start) of final rows past the cursor that this finalizer wrote."""
        self._done_at: int | None = None
        """The frontier of the last pass that finished everything it could."""

    def run_once(self) -> FinalizeReport:
        """One pass: everything final by now gets its final row and its alerts."""
        pipeline, store = self.pipeline, self._store
        name = pipeline.name
        report = FinalizeReport()
        shards = store.read_progress(name)
        frontier = final_frontier(shards, pipeline.allowed_lateness_ms)
        through = store.finalized_through(name)
        if through is None:
            # The first pass: index rows written before the index existed.
            store.backfill_index(name)
            store.set_finalized_through(name, 0)
            through = 0
        report.through = through
        if frontier is None:
            return report
        step_ms = _end_step(pipeline.windows)
        if self._done_at is not None and frontier // step_ms == self._done_at // step_ms:
            report.skipped = True
            return report
        limit = min(frontier, END_OF_STARTS)
        starts = store.window_starts(name, through, limit)
        rows: list[StoredRow] = []
        taken, at_least = 0, 1
        while starts:
            # Read whole windows until the step is big enough (or a long session or
            # hopping window needs more of them to be decided).
            while taken < len(starts) and (
                taken < at_least or (len(rows) < ROWS_PER_STEP and taken < WINDOWS_PER_STEP)
            ):
                rows.extend(store.window_rows(name, starts[taken]))
                taken += 1
            rest = starts[taken:]
            # A step that stops short of the frontier is planned as if the frontier were
            # the next window's start: no window or session reaching past it is final yet.
            step = plan_step(pipeline, rows, rest[0] if rest else frontier, through)
            fresh = [
                row for row in step.finals if (row.key, row.window_start_ms) not in self._written
            ]
            if step.through <= through:
                self._commit(fresh, [], report)  # sessions past a still open one
                if not rest:
                    break  # nothing more is final
                if len(rows) >= MAX_ROWS_HELD:
                    log.warning(
                        "%s: a session open since %s holds %d partial rows behind it; later "
                        "sessions are finalized as they end, the rest when it ends",
                        name,
                        through,
                        len(rows),
                    )
                    break
                at_least = taken * 2
                continue
            self._commit(fresh, step.partials, report)
            store.set_finalized_through(name, step.through)
            through = report.through = step.through
            self._written = {slot for slot in self._written if slot[1] >= through}
            starts = [start for start in starts if start >= through]
            rows, taken, at_least = [], 0, 1
        self._done_at = frontier
        return report

    def _commit(
        self, finals: Sequence[FinalRow], partials: Sequence[StoredRow], report: FinalizeReport
    ) -> None:
        pipeline, store = self.pipeline, self._store
        ttl = pipeline.result_ttl_s
        stored: list[FinalRow] = []
        # Final rows of one window share an expiry (its end plus the TTL).
        by_end: dict[int, list[FinalRow]] = {}
        for row in finals:
            by_end.setdefault(row.window_end_ms, []).append(row)
        for end, rows in sorted(by_end.items()):
            written = store.write_finals(rows, _expiry(end, ttl))
            # The values as stored, exactly (a row that existed is taken as it was).
            stored.extend(
                replace(row, values=final_result(pipeline, row).values) for row in written
            )
        report.final_rows += len(stored)
        by_start: dict[int, list[FinalRow]] = {}
        for row in stored:
            by_start.setdefault(row.window_start_ms, []).append(row)
        report.windows += len(by_start)
        if not isinstance(pipeline.windows, SessionWindows):
            for start, rows in sorted(by_start.items()):
                ranked = top_keys(pipeline, rows, TOP_KEYS)
                if ranked:
                    end = rows[0].window_end_ms
                    store.write_top_keys(
                        pipeline.name, start, end, ranked, len(rows), _expiry(end, ttl)
                    )
        self._alert(stored, report)
        if partials:
            now = int(self._wall_clock())
            store.expire_partials(partials, now + PARTIAL_RETENTION_S)
        # Only now, with their alerts sent: a failed commit is planned again in full.
        self._written.update((row.key, row.window_start_ms) for row in stored)

    def _alert(self, stored: Sequence[FinalRow], report: FinalizeReport) -> None:
        pipeline, store = self.pipeline, self._store
        rules = pipeline.sinks.alerts
        if not rules or self._alerts is None:
            return
        alerts = [
            alert
            for row in stored
            for alert in alerts_for(
                pipeline.name, rules, row.key, row.window_start_ms, row.window_end_ms, row.values
            )
        ]
        if not alerts:
            return
        unsent = store.unsent_alerts(pipeline.name, [a.alert_id for a in alerts])
        pending = [alert for alert in alerts if alert.alert_id in unsent]
        report.alerts_already_sent += len(alerts) - len(pending)
        ttl = pipeline.result_ttl_s
        # Recorded as sent a batch at a time: a later failure resends only what follows.
        for offset in range(0, len(pending), ALERTS_PER_RECORD):
            chunk = pending[offset : offset + ALERTS_PER_RECORD]
            refused = {alert.alert_id: why for alert, why in self._alerts.publish(chunk)}
            for alert_id, why in refused.items():
                log.error("%s: alert %s refused for good: %s", pipeline.name, alert_id, why)
            latest_end = max(alert.window_end_ms for alert in chunk)
            store.record_alerts_sent(pipeline.name, chunk, _expiry(latest_end, ttl), refused)
            report.alerts_sent += len(chunk) - len(refused)
            report.alerts_refused += len(refused)
            report.alerts.extend(a for a in chunk if a.alert_id not in refused)
        if pending:
            log.info("%s: %d alerts sent", pipeline.name, len(pending))


def _expiry(window_end_ms: int, ttl_s: int | None) -> int | None:
    return None if ttl_s is None else window_end_ms // 1000 + ttl_s
