"""Running the finalizers (processors/finalizer.py) alongside the shards.

Passes run on a thread of their own, so a long one (a backlog of windows, a slow alert
topic) never holds up reading and flushing the shards. Each pipeline's finalizer has its
own schedule: a failing pass (a throttled table, an unreachable topic) is logged and tried
again later with backoff, without holding back the other pipelines; the cursor has not
moved past anything unfinished, so nothing is lost. The last pass, when a run ends, is
retried until the deadline and then raises, so a run that ends cleanly has written every
final row and sent every alert due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from processors.finalizer import Finalizer, FinalizeReport
from streams.aws_errors import is_retryable
from streams.backoff import full_jitter

log = logging.getLogger("shardflow.finalizer")


@dataclass
class _Slot:
    finalizer: Finalizer
    next_at: float
    failures: int = 0


class FinalizeSchedule:
    """Every ``interval`` seconds, one pass of each finalizer, on a background thread."""

    def __init__(
        self,
        finalizers: Sequence[Finalizer],
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        retry_deadline: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._slots = [_Slot(finalizer, clock() + interval) for finalizer in finalizers]
        self._interval = interval
        self._clock = clock
        self._retry_deadline = retry_deadline
        self._sleep = sleep
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.totals = FinalizeReport()

    def maybe_run(self) -> None:
        """Start a pass of the finalizers that are due, unless one is still running."""
        now = self._clock()
        due = [slot for slot in self._slots if now >= slot.next_at]
        if not due or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(
            target=self._pass, args=(due,), name="finalizer", daemon=True
        )
        self._thread.start()

    def _pass(self, due: Sequence[_Slot]) -> None:
        for slot in due:
            name = slot.finalizer.pipeline.name
            try:
                self._count(slot.finalizer.run_once())
            except Exception as exc:
                slot.failures += 1
                delay = max(self._interval, full_jitter(slot.failures, base=1.0, cap=60.0))
                log.warning("%s: finalizing failed (%s); trying again in %.0fs", name, exc, delay)
                slot.next_at = self._clock() + delay
                continue
            slot.failures = 0
            slot.next_at = self._clock() + self._interval

    def run_all(self) -> None:
        """Wait for a running pass, then a last pass of every finalizer, retried on
        transient errors until the deadline; raises if one still fails."""
        if self._thread is not None:
            self._thread.join()
        deadline = self._clock() + self._retry_deadline
        for slot in self._slots:
            attempt = 0
            while True:
                try:
                    self._count(slot.finalizer.run_once())
                    break
                except Exception as exc:
                    if not is_retryable(exc) or self._clock() > deadline:
                        raise
                    attempt += 1
                    delay = full_jitter(attempt, base=0.5, cap=10.0)
                    log.warning("finalizing failed (%s); retrying in %.1fs", exc, delay)
                    self._sleep(delay)

    def _count(self, report: FinalizeReport) -> None:
        with self._lock:
            totals = self.totals
            totals.final_rows += report.final_rows
            totals.windows += report.windows
            totals.alerts_sent += report.alerts_sent
            totals.alerts_already_sent += report.alerts_already_sent
            totals.alerts_refused += report.alerts_refused
