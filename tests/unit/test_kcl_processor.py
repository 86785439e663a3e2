"""The KCL record processor, driven over its JSON-lines stdin/stdout exactly as the
MultiLangDaemon drives it (no Java): initialize, batches, throttled checkpoints,
shardEnded, leaseLost, shutdownRequested. The fake daemon checks, at every checkpoint the
processor asks for, that the position is durable in the results table."""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.query import query_windows
from processors.sinks.memory import MemoryDeadLetters, MemoryPartialStore
from processors.windowing.engine import ShardProgress
from processors.windowing.records import Position
from streams.kcl_processor import KclShardProcessor, ProcessorOptions
from streams.kcl_protocol import serve

NAME = PAGE_VIEWS.name
SHARD = "shardId-000000000000"
IDENTITY = "arn:aws:kinesis:us-east-1:1:stream/s@2026-11-27T00:00:00+00:00"


def view(ts: int, page: str = "/a", event_id: str | None = None) -> bytes:
    return orjson.dumps({"event_id": event_id or f"e{ts}", "ts": ts, "page": page})


def record(sequence: int, data: bytes, sub: int = 0, key: str = "k") -> dict[str, Any]:
    """One record as the daemon sends it (every nested object carries an action)."""
    return {
        "action": "record",
        "data": base64.b64encode(data).decode(),
        "partitionKey": key,
        "sequenceNumber": str(sequence),
        "subSequenceNumber": sub,
        "approximateArrivalTimestamp": 1_795_000_000_000,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ChildExited(Exception):
    """The record processor ended (EOF on its stdout) instead of acknowledging."""


class FakeDaemon:
    """Plays the daemon's side of the pipes, with ``serve`` running in a thread."""

    def __init__(self, processor: KclShardProcessor, store: MemoryPartialStore) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        self._to_child = os.fdopen(down_w, "wb")
        self._from_child = os.fdopen(up_r, "rb")
        child_in, child_out = os.fdopen(down_r, "rb"), os.fdopen(up_w, "wb")
        self.store = store
        self.checkpoint_errors: list[str | None] = []
        self.requests: list[tuple[str | None, int | None]] = []
        self.checkpoints: list[tuple[str | None, int | None]] = []
        self.exit_code: int | None = None

        def child() -> None:
            try:
                self.exit_code = serve(processor, child_in, child_out)
            finally:
                child_out.close()
                child_in.close()

        self._thread = threading.Thread(target=child, daemon=True)
        self._thread.start()

    def send(self, action: str, **fields: Any) -> None:
        """One action, answering checkpoints, until the child's status for it."""
        self._to_child.write(orjson.dumps({"action": action, **fields}) + b"\n")
        self._to_child.flush()
        while True:
            line = self._from_child.readline()
            if not line:
                self._thread.join(5)
                raise ChildExited(self.exit_code)
            message = orjson.loads(line)
            if message["action"] == "status":
                assert message["responseFor"] == action
                return
            assert message["action"] == "checkpoint"
            self._checkpoint(message["sequenceNumber"], message["subSequenceNumber"])

    def _checkpoint(self, sequence: str | None, sub: int | None) -> None:
        self.requests.append((sequence, sub))
        error = self.checkpoint_errors.pop(0) if self.checkpoint_errors else None
        if error is None:
            progress = self.store.progress[(NAME, SHARD)]
            if sequence is None:
                assert progress.ended, "SHARD_END checkpointed before the end was durable"
            else:
                assert progress.checkpoint is not None
                assert Position(int(sequence), sub or 0) <= progress.checkpoint, "not durable"
            self.checkpoints.append((sequence, sub))
        reply = {"action": "checkpoint", "sequenceNumber": sequence, "subSequenceNumber": sub}
        self._to_child.write(orjson.dumps({**reply, "error": error}) + b"\n")
        self._to_child.flush()

    def initialize(self, sequence: str = "TRIM_HORIZON", sub: int = 0) -> None:
        self.send("initialize", shardId=SHARD, sequenceNumber=sequence, subSequenceNumber=sub)

    def batch(self, *records: dict[str, Any], behind: int | None = 0) -> None:
        self.send("processRecords", records=list(records), millisBehindLatest=behind)

    def close(self) -> int | None:
        self._to_child.close()
        self._thread.join(5)
        return self.exit_code


class Setup:
    def __init__(
        self,
        store: MemoryPartialStore | None = None,
        flush_interval: float = 0.0,
        children: Sequence[str] = (),
    ) -> None:
        self.store = store or MemoryPartialStore()
        self.dead = MemoryDeadLetters()
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.processor = KclShardProcessor(
            [PAGE_VIEWS],
            {NAME: self.store},
            {NAME: self.dead},
            IDENTITY,
            lambda shard: list(children),
            ProcessorOptions(flush_interval=flush_interval, fence_grace=30.0),
            clock=self.clock,
            wall_clock=lambda: 1_795_000_000.0,
            sleep=self.sleeps.append,
        )
        self.daemon = FakeDaemon(self.processor, self.store)

    def views(self) -> dict[str, int]:
        return {
            f"{r.key}@{r.window.start_ms}": r.values["views"]
            for r in query_windows(self.store, PAGE_VIEWS)
        }


def test_a_batch_is_stored_then_checkpointed_at_what_is_durable() -> None:
    s = Setup()
    s.daemon.initialize()
    s.daemon.batch(record(1, view(1_000)), record(2, b"{broken"), record(3, view(2_000)))
    assert s.views() == {"/a@0": 2}
    assert [letter.record.position for letter in s.dead.letters] == [Position(2)]
    assert s.daemon.checkpoints == [("3", 0)]
    s.daemon.batch(behind=0)  # nothing new: nothing to checkpoint
    assert s.daemon.requests == [("3", 0)]
    assert s.daemon.close() == 0


def test_flushes_wait_for_the_interval_and_empty_batches_close_it() -> None:
    s = Setup(flush_interval=5.0)
    s.daemon.initialize()
    s.daemon.batch(record(1, view(1_000)))
    assert s.views() == {} and s.daemon.requests == []  # applied, not durable yet
    s.clock.now += 6
    s.daemon.batch()  # callProcessRecordsEvenForEmptyRecordList: the window still closes
    assert s.views() == {"/a@0": 1} and s.daemon.checkpoints == [("1", 0)]


def test_a_throttled_checkpoint_is_retried_and_never_goes_past_durable() -> None:
    s = Setup()
    s.daemon.checkpoint_errors = ["ThrottlingException", None]
    s.daemon.initialize()
    s.daemon.batch(record(7, view(1_000)))
    assert s.daemon.requests == [("7", 0), ("7", 0)]
    assert s.daemon.checkpoints == [("7", 0)] and len(s.sleeps) == 1
    # Throttled past every attempt: processing goes on, the next batch checkpoints.
    s.daemon.checkpoint_errors = ["ThrottlingException"] * 8
    s.daemon.batch(record(8, view(1_500)))
    assert s.daemon.checkpoints == [("7", 0)]
    s.daemon.batch(record(9, view(1_600)))
    assert s.daemon.checkpoints == [("7", 0), ("9", 0)]
    assert s.views() == {"/a@0": 3}


def test_kpl_user_records_resume_inside_an_aggregate_without_double_counting() -> None:
    store = MemoryPartialStore()
    first = Setup(store)
    first.daemon.initialize()
    # The KCL deaggregates: user records share the sequence number, sub = index.
    first.daemon.batch(record(5, view(1_000), sub=0), record(5, view(1_001), sub=1))
    assert first.daemon.checkpoints == [("5", 1)]
    first.daemon.send("leaseLost")
    assert first.daemon.close() == 0
    # The next owner starts at the lease's checkpoint; the KCL re-reads the aggregate
    # and filters what is at or before it, but a replay from earlier is skipped too.
    second = Setup(store)
    second.daemon.initialize("5", 1)
    second.daemon.batch(
        record(5, view(1_000), sub=0), record(5, view(1_001), sub=1), record(5, view(1_002), sub=2)
    )
    assert second.views() == {"/a@0": 3}
    assert second.daemon.checkpoints == [("5", 2)]


def test_shard_end_registers_the_children_first_then_checkpoints_the_end() -> None:
    store = MemoryPartialStore()
    store.register_shard(NAME, IDENTITY, "other")
    store.write_progress(NAME, IDENTITY, ShardProgress("other", max_event_time=200_000))
    s = Setup(store, children=["child-1", "child-2"])
    s.daemon.initialize()
    s.daemon.batch(record(1, view(130_000)))
    s.daemon.send("shardEnded")
    assert s.daemon.checkpoints[-1] == (None, None)  # SHARD_END, after the end was durable
    progress = {p.shard_id: p for p in store.read_progress(NAME)}
    assert progress[SHARD].ended
    # Registered at the frontier of that moment: min(130 s, 200 s) - 10 s lateness.
    assert progress["child-1"].watermark_floor == progress["child-2"].watermark_floor == 120_000
    assert s.daemon.close() == 0


def test_lease_lost_drops_what_is_not_durable_and_writes_nothing_more() -> None:
    s = Setup(flush_interval=60.0)
    s.daemon.initialize()
    s.daemon.batch(record(1, view(1_000)))
    s.daemon.send("leaseLost")
    s.clock.now += 120
    s.daemon.batch(record(2, view(2_000)))  # the daemon would not; nothing happens
    assert s.views() == {} and s.daemon.requests == []
    assert s.store.progress[(NAME, SHARD)].checkpoint is None
    assert s.daemon.close() == 0


def test_shutdown_requested_flushes_and_checkpoints() -> None:
    s = Setup(flush_interval=60.0)
    s.daemon.initialize()
    s.daemon.batch(record(1, view(1_000)), record(2, view(2_000)))
    s.daemon.send("shutdownRequested")
    assert s.views() == {"/a@0": 2} and s.daemon.checkpoints == [("2", 0)]


def test_a_zombie_is_fenced_by_the_conditional_writes() -> None:
    store = MemoryPartialStore()
    zombie = Setup(store, flush_interval=60.0)
    zombie.daemon.initialize()
    zombie.daemon.batch(record(1, view(1_000)))
    # Meanwhile the shard's new owner made more of it durable.
    owner = Setup(store)
    owner.daemon.initialize()
    owner.daemon.batch(record(1, view(1_000)), record(2, view(2_000)))
    zombie.clock.now += 61
    zombie.daemon.batch()  # its flush is refused: it stops writing, checkpoints nothing
    assert zombie.daemon.requests == [] and owner.views() == {"/a@0": 2}
    zombie.daemon.send("leaseLost")
    assert zombie.daemon.close() == 0


def test_a_fenced_processor_the_daemon_keeps_feeding_fails_after_the_grace() -> None:
    store = MemoryPartialStore()
    zombie = Setup(store, flush_interval=60.0)
    zombie.daemon.initialize()
    zombie.daemon.batch(record(1, view(1_000)))
    owner = Setup(store)
    owner.daemon.initialize()
    owner.daemon.batch(record(1, view(1_000)), record(2, view(2_000)))
    zombie.clock.now += 61
    zombie.daemon.batch()
    zombie.clock.now += 31
    with pytest.raises(ChildExited):
        zombie.daemon.batch(record(3, view(3_000)))
    assert zombie.daemon.exit_code == 1


class BrokenStore(MemoryPartialStore):
    def write_rows(self, rows: Any) -> None:
        raise RuntimeError("disk on fire")


def test_a_failure_is_reported_with_the_shard_and_ends_the_child(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Setup(BrokenStore())
    s.daemon.initialize()
    with caplog.at_level(logging.ERROR), pytest.raises(ChildExited):
        s.daemon.batch(record(1, view(1_000)))
    assert s.daemon.exit_code == 1 and s.daemon.requests == []
    assert any(
        SHARD in r.getMessage() and "processRecords" in r.getMessage() for r in caplog.records
    )


def test_a_lease_checkpointed_past_the_results_table_is_refused() -> None:
    s = Setup()
    with pytest.raises(ChildExited):
        s.daemon.initialize("99", 0)
    assert s.daemon.exit_code == 1


def test_a_quiet_shard_is_marked_idle_then_woken_at_the_frontier() -> None:
    store = MemoryPartialStore()
    store.register_shard(NAME, IDENTITY, "other")
    store.write_progress(NAME, IDENTITY, ShardProgress("other", max_event_time=400_000))
    s = Setup(store)
    s.daemon.initialize()
    s.daemon.batch(record(1, view(100_000)))
    s.clock.now += 30
    s.daemon.batch(behind=500)  # not at the tip: not quiet
    s.clock.now += 40
    s.daemon.batch(behind=0)
    assert store.progress[(NAME, SHARD)].idle_since_ms == 1_795_000_000_000
    # Idle, it no longer holds windows open: final up to 400 s - 10 s.
    s.daemon.batch(record(2, view(200_000)), record(3, view(395_000)))
    progress = store.progress[(NAME, SHARD)]
    assert progress.idle_since_ms is None and progress.watermark_floor == 390_000
    assert [letter.reason for letter in s.dead.letters] == ["late"]  # the 200 s event
    assert s.views() == {"/a@60000": 1, "/a@360000": 1}


def test_a_shard_end_the_lease_table_keeps_refusing_fails_but_a_lost_lease_does_not() -> None:
    going = Setup(children=["child"])
    going.daemon.initialize()
    going.daemon.checkpoint_errors = ["ShutdownException"]
    going.daemon.send("shardEnded")  # acknowledged: the lease is going anyway
    assert going.store.progress[(NAME, SHARD)].ended
    throttled = Setup(children=["child"])
    throttled.daemon.initialize()
    throttled.daemon.checkpoint_errors = ["ThrottlingException"] * 8
    with pytest.raises(ChildExited):
        throttled.daemon.send("shardEnded")
    assert throttled.daemon.exit_code == 1 and throttled.store.progress[(NAME, SHARD)].ended


def test_a_checkpoint_refused_because_the_lease_is_gone_stops_all_writes() -> None:
    """ShutdownException: the lease table says another worker holds the shard now. Until
    the daemon's leaseLost comes, this processor is a zombie: it must write nothing more."""
    s = Setup()
    s.daemon.initialize()
    s.daemon.checkpoint_errors = ["ShutdownException"]
    s.daemon.batch(record(1, view(1_000)))
    assert s.daemon.requests == [("1", 0)] and s.daemon.checkpoints == []
    s.daemon.batch(record(2, view(2_000)))  # still delivered before leaseLost
    assert s.views() == {"/a@0": 1}  # the shard's new owner's to count
    assert s.store.progress[(NAME, SHARD)].checkpoint == Position(1)
    assert s.daemon.requests == [("1", 0)]
    s.daemon.send("leaseLost")
    assert s.daemon.close() == 0
