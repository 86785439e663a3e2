"""The finalizers' schedule in the runner: passes on their own thread, one pipeline's
failures never hold back another's, and the last pass raises what it cannot finish."""

from __future__ import annotations

from typing import Any

import pytest

from processors.finalizer import FinalizeReport
from streams.finalize_schedule import FinalizeSchedule


class FakeFinalizer:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.pipeline = type("P", (), {"name": name})()
        self.fail = fail
        self.passes = 0

    def run_once(self) -> FinalizeReport:
        self.passes += 1
        if self.fail:
            raise RuntimeError(f"{self.pipeline.name} is broken")
        return FinalizeReport(final_rows=1)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def wait(schedule: FinalizeSchedule) -> None:
    thread = schedule._thread
    if thread is not None:
        thread.join(timeout=5)


def test_a_failing_pipeline_does_not_hold_back_the_others() -> None:
    clock = Clock()
    broken, healthy = FakeFinalizer("broken", fail=True), FakeFinalizer("healthy")
    schedule = FinalizeSchedule([broken, healthy], interval=5, clock=clock)  # type: ignore[list-item]
    for second in range(0, 60, 5):
        clock.now = float(second + 5)
        schedule.maybe_run()
        wait(schedule)

    assert healthy.passes == 12, "every 5 seconds"
    assert 1 <= broken.passes < healthy.passes, "the broken one backs off"
    assert schedule.totals.final_rows == 12


def test_nothing_runs_before_it_is_due() -> None:
    clock = Clock()
    finalizer = FakeFinalizer("p")
    schedule = FinalizeSchedule([finalizer], interval=5, clock=clock)  # type: ignore[list-item]
    clock.now = 4.9
    schedule.maybe_run()
    wait(schedule)
    assert finalizer.passes == 0


def test_the_last_pass_raises_what_it_cannot_finish() -> None:
    schedule = FinalizeSchedule([FakeFinalizer("broken", fail=True)])  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="broken"):
        schedule.run_all()


def test_the_last_pass_waits_for_a_running_one(monkeypatch: Any) -> None:
    clock = Clock()
    finalizer = FakeFinalizer("p")
    schedule = FinalizeSchedule([finalizer], interval=5, clock=clock)  # type: ignore[list-item]
    clock.now = 5
    schedule.maybe_run()
    schedule.run_all()
    assert finalizer.passes == 2
    assert schedule.totals.final_rows == 2
