"""Running the finalizers (processors/finalizer.py) alongside the shards.

A failing pass (a throttled table, an unreachable alert topic) is logged and tried again
later with backoff: the cursor has not moved past anything unfinished, so nothing is lost,
and reading the shards goes on meanwhile. The last pass, when a run ends, is retried until
the deadline and then raises, so a run that ends cleanly has sent every alert due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from processors.finalizer import Finalizer, FinalizeReport
from streams.aws_errors import is_retryable
from streams.backoff import full_jitter

log = logging.getLogger("shardflow.finalizer")


class FinalizeSchedule:
    """Every ``interval`` seconds, one pass of each finalizer."""

    def __init__(
        self,
        finalizers: Sequence[Finalizer],
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        retry_deadline: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._finalizers = list(finalizers)
        self._interval = interval
        self._clock = clock
        self._retry_deadline = retry_deadline
        self._sleep = sleep
        self._next = clock() + interval
        self._failures = 0
        self.totals = FinalizeReport()

    def maybe_run(self) -> None:
        """A pass of every finalizer when one is due; failures wait for a later pass."""
        now = self._clock()
        if not self._finalizers or now < self._next:
            return
        try:
            for finalizer in self._finalizers:
                self._count(finalizer.run_once())
        except Exception as exc:
            self._failures += 1
            delay = max(self._interval, full_jitter(self._failures, base=1.0, cap=60.0))
            log.warning("finalizing failed (%s); trying again in %.0fs", exc, delay)
            self._next = self._clock() + delay
            return
        self._failures = 0
        self._next = self._clock() + self._interval

    def run_all(self) -> None:
        """A last pass of every finalizer, retried on transient errors until the deadline."""
        deadline = self._clock() + self._retry_deadline
        for finalizer in self._finalizers:
            attempt = 0
            while True:
                try:
                    self._count(finalizer.run_once())
                    break
                except Exception as exc:
                    if not is_retryable(exc) or self._clock() > deadline:
                        raise
                    attempt += 1
                    delay = full_jitter(attempt, base=0.5, cap=10.0)
                    log.warning("finalizing failed (%s); retrying in %.1fs", exc, delay)
                    self._sleep(delay)

    def _count(self, report: FinalizeReport) -> None:
        totals = self.totals
        totals.final_rows += report.final_rows
        totals.windows += report.windows
        totals.alerts_sent += report.alerts_sent
        totals.alerts_already_sent += report.alerts_already_sent
