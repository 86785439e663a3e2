"""Splits and merges while the embedded runner processes, on kinesis-local (moto never ends
a closed shard; DynamoDB, SQS and SNS stay on moto).

The stream starts with two shards. Events go in before, between and after two reshards:
shard 0 is split at the middle of its hash key range, then the upper child is merged with
shard 1 (a merge of parents from two generations). Then:

- every parent was read to its end before anything of its children: the first
  GetShardIterator and the first row write of a child come after the parent's ended
  progress is durable, and a parent writes nothing after it; the runner's log says the
  same; the stored progress has parents ended and children registered with a watermark
  floor no higher than their parents' watermark;
- the stored aggregates equal tests/oracle.py's computation over every shard, parents
  included (with finality decided by the shards still open), and one clean in-memory run
  of the engine, exactly; the dead-letter queue holds exactly the invalid and late events;
- the finalizer wrote one final row for exactly the windows final across the reshard,
  equal to the merge of their partial rows, including windows with rows from a parent and
  its children.

The second test does it again while ``shardflow run`` is SIGKILLed and restarted at random
moments (some after each reshard). ``SHARDFLOW_RESHARD_SEED=N`` replays a run.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.windowing.engine import ShardProgress
from processors.windowing.rows import StoredRow
from shardflow import wiring
from shardflow.input import OutgoingRecord
from shardflow.kinesis_local import LOOPBACK_HEX, KinesisLocal, listening_addresses
from shardflow.produce import ProduceReport, produce
from streams.kinesis_producer import KinesisProducer
from streams.runner import RunnerOptions
from tests.conftest import AwsEnv
from tests.integration.resharding import (
    check_finals,
    check_lineage_progress,
    check_parents_first,
    check_results,
    list_shards,
    merge_adjacent,
    open_shards,
    parents_of,
    phase_lines,
    split_in_half,
)

pytestmark = [pytest.mark.emulator, pytest.mark.kinesis_local, pytest.mark.slow]

PHASE = 700
"""Events per phase (before, between and after the reshards): 2,100 events, 7 minutes of
event time; kinesis-local takes a few hundred records a second."""
LEAD = 60
"""On-time events opening each phase after a reshard (tests/integration/resharding.py)."""


def _seed() -> int:
    return int(os.environ.get("SHARDFLOW_RESHARD_SEED") or random.randrange(1_000_000))


def _records(lines: Sequence[bytes], rng: random.Random, first: int) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(line, f"k{rng.randrange(10**9)}", first + i) for i, line in enumerate(lines)
    ]


def _wait_for(what: str, done: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _wait_for_progress(store: DynamoPartialStore, shards: int) -> None:
    """Until ``shards`` shards have durable progress with events: a child registered after
    that gets a real watermark floor (with none, nothing is final and its floor is None)."""
    _wait_for(
        f"progress on {shards} shards",
        lambda: (
            sum(p.max_event_time is not None for p in store.read_progress(PAGE_VIEWS.name))
            >= shards
        ),
        timeout=120,
    )


def _new_reshard_moment(
    kinesis: Any, stream: str, store: DynamoPartialStore, seen: Sequence[str]
) -> str | None:
    """A state of the stored progress in the middle of a reshard, not ``seen`` before: a
    closed shard not read to its end yet, or a child whose parents all ended that has no
    checkpoint yet."""
    shards = list_shards(kinesis, stream)
    progress = {p.shard_id: p for p in store.read_progress(PAGE_VIEWS.name)}
    moments = [
        f"reading closed {shard['ShardId']}"
        for shard in shards
        if "EndingSequenceNumber" in shard["SequenceNumberRange"]
        and shard["ShardId"] in progress
        and not progress[shard["ShardId"]].ended
    ]
    for child, parents in parents_of(shards).items():
        state = progress.get(child)
        parents_ended = all(p in progress and progress[p].ended for p in parents)
        if parents_ended and (state is None or state.checkpoint is None):
            moments.append(f"{child} not started, parents ended")
    return next((moment for moment in moments if moment not in seen), None)


def _sent_all(report: ProduceReport, records: Sequence[OutgoingRecord]) -> None:
    assert not report.failures, report.failures[:3]
    assert report.sent == len(records)


class Timeline:
    """What the runner did, in order, from its Kinesis client and its store."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, shard_id: str, ended: bool = False) -> None:
        with self._lock:
            self.events.append((kind, shard_id, ended))

    def on_get_shard_iterator(self, params: dict[str, Any], **_: Any) -> None:
        self.add("iterator", str(params["ShardId"]))


def recording_store(timeline: Timeline) -> type[DynamoPartialStore]:
    class RecordingStore(DynamoPartialStore):
        def write_rows(self, rows: Sequence[StoredRow]) -> None:
            for shard_id in sorted({row.shard_id for row in rows}):
                timeline.add("rows", shard_id)
            super().write_rows(rows)

        def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None:
            super().write_progress(pipeline, stream, progress)
            timeline.add("progress", progress.shard_id, progress.ended)

    return RecordingStore


def _check_log_order(messages: Sequence[str], shards: Sequence[dict[str, Any]]) -> None:
    for child, parents in parents_of(shards).items():
        started = messages.index(f"shard {child}: starting at its oldest record")
        for parent in parents:
            assert messages.index(f"shard {parent}: read to its end") < started, messages


def test_split_and_merge_while_the_embedded_runner_processes(
    aws_kinesis_local: AwsEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    aws = aws_kinesis_local
    seed = _seed()
    print(f"SHARDFLOW_RESHARD_SEED={seed}")
    rng = random.Random(seed)
    kinesis, stream = aws.clients.kinesis, aws.settings.stream
    caplog.set_level(logging.INFO, logger="shardflow.runner")

    timeline = Timeline()
    monkeypatch.setattr(wiring, "DynamoPartialStore", recording_store(timeline))
    hook = "before-parameter-build.kinesis.GetShardIterator"
    kinesis.meta.events.register(hook, timeline.on_get_shard_iterator)
    runner = wiring.make_runner(
        aws.clients,
        aws.settings,
        [PAGE_VIEWS],
        RunnerOptions(flush_interval=0.2, finalize_interval=0.5),
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="embedded-runner")
    thread.start()
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    try:
        with KinesisProducer(kinesis, stream) as producer:
            before = _records(phase_lines(0, PHASE, seed), rng, 0)
            _sent_all(produce(producer, before), before)
            _wait_for_progress(store, shards=2)
            first, _ = (s["ShardId"] for s in open_shards(kinesis, stream))
            split_in_half(kinesis, stream, first)
            between = _records(phase_lines(PHASE, PHASE, seed, LEAD), rng, PHASE)
            _sent_all(produce(producer, between), between)

            upper_child, neighbour = (s["ShardId"] for s in open_shards(kinesis, stream)[1:])
            merge_adjacent(kinesis, stream, upper_child, neighbour)
            after = _records(phase_lines(2 * PHASE, PHASE, seed, LEAD), rng, 2 * PHASE)
            _sent_all(produce(producer, after), after)
        total = 3 * PHASE
        _wait_for(
            "the runner to apply every record",
            lambda: runner.stats.records >= total or bool(failures) or not thread.is_alive(),
        )
    finally:
        stop.set()
        thread.join(timeout=120)
        kinesis.meta.events.unregister(hook, timeline.on_get_shard_iterator)
    assert not thread.is_alive(), "the runner did not stop"
    assert not failures, failures
    assert runner.stats.records == total, "each record applied once"

    shards = list_shards(kinesis, stream)
    lineage = parents_of(shards)
    assert len(shards) == 5 and len(lineage) == 3, shards
    assert sorted(len(parents) for parents in lineage.values()) == [1, 1, 2]
    check_parents_first(timeline.events, shards)
    _check_log_order(
        [r.getMessage() for r in caplog.records if r.name == "shardflow.runner"], shards
    )
    check_lineage_progress(store.read_progress(PAGE_VIEWS.name), shards)

    expected, _ = check_results(aws, total, shards)
    check_finals(store, expected, shards)
    store.close()


def test_sigkill_while_resharding_then_exact_aggregates(aws_kinesis_local: AwsEnv) -> None:
    aws = aws_kinesis_local
    seed = _seed()
    print(f"SHARDFLOW_RESHARD_SEED={seed}")
    rng = random.Random(seed)
    kinesis, stream = aws.clients.kinesis, aws.settings.stream
    phases = [
        _records(phase_lines(0, PHASE, seed), rng, 0),
        _records(phase_lines(PHASE, PHASE, seed, LEAD), rng, PHASE),
        _records(phase_lines(2 * PHASE, PHASE, seed, LEAD), rng, 2 * PHASE),
    ]
    reports: list[ProduceReport] = []
    resharded: list[str] = []

    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)

    def write() -> None:
        with KinesisProducer(kinesis, stream) as producer:
            reports.append(produce(producer, phases[0], rate=700))
            _wait_for_progress(store, shards=2)  # some run got that far between kills
            split_in_half(kinesis, stream, open_shards(kinesis, stream)[0]["ShardId"])
            resharded.append("split")
            reports.append(produce(producer, phases[1], rate=700))
            lower, upper = (s["ShardId"] for s in open_shards(kinesis, stream)[1:])
            merge_adjacent(kinesis, stream, lower, upper)
            resharded.append("merge")
            reports.append(produce(producer, phases[2], rate=700))

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    run = [*aws.cli(), "run", "page-views", "--flush-interval", "0.2"]
    kills = 0
    after: dict[str, int] = defaultdict(int)
    moments: list[str] = []
    while writer.is_alive() or kills < 5 or after["merge"] < 2:
        runner = subprocess.Popen(
            run, env=aws.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started = time.monotonic()
        deadline = started + rng.uniform(0.6, 2.5)
        while time.monotonic() < deadline:
            # Besides the random moments: kill as soon as a run is caught in the middle
            # of a reshard it has not been killed in yet.
            if time.monotonic() - started > 1.0:
                moment = _new_reshard_moment(kinesis, stream, store, moments)
                if moment is not None:
                    moments.append(moment)
                    break
            time.sleep(0.05)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        kills += 1
        for step in resharded:
            after[step] += 1
    writer.join()
    print(f"{kills} kills, {len(moments)} of them mid-reshard: {moments}")
    assert moments, "no run was killed in the middle of a reshard"
    assert len(reports) == 3, "the writer failed"
    for report, records in zip(reports, phases, strict=True):
        _sent_all(report, records)
    assert after["split"] >= 2, "kills after the split"

    final = subprocess.run(
        [*run, "--until-idle", "2"], env=aws.env, capture_output=True, timeout=300
    )
    assert final.returncode == 0, final.stderr.decode()[-3000:]

    shards = list_shards(kinesis, stream)
    assert len(shards) == 5 and len(parents_of(shards)) == 3, shards
    check_lineage_progress(store.read_progress(PAGE_VIEWS.name), shards)
    expected, _ = check_results(aws, 3 * PHASE, shards)
    check_finals(store, expected, shards)
    store.close()


def test_kinesis_local_listens_on_loopback_only_and_stops_by_its_pid(tmp_path: Path) -> None:
    server = KinesisLocal(log=tmp_path / "kinesis-local.log")
    server.start()
    try:
        pid = server.pid
        assert pid is not None and server.running()
        for port in (server.plain_port, server.tls_port):
            assert listening_addresses(port) in ({LOOPBACK_HEX}, None)  # None: no /proc
        with urllib.request.urlopen(f"{server.url}/healthcheck", timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.plain_port), timeout=1).close()
