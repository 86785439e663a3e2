"""The KCL runner for real (Java, the KCL 3 jars amazon-kclpy installed):

- two MultiLangDaemon workers on one stream, the one holding the KCL's leader lock killed
  with SIGKILL mid-stream; the other takes its leases;
- one worker while the stream is split and merged: parents end before their children.

Each time the stored aggregates equal the independent computation (tests/oracle.py) and
one clean in-memory run, exactly, and the dead-letter queue holds exactly the invalid and
late events. ``SHARDFLOW_KCL_SEED=N`` replays a run.

Kinesis is kinesis-local (the KCL's Kinesis client speaks HTTP/2, which moto's server
does not); the lease tables, results, dead letters and alerts are on moto.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from processors.sinks.dynamodb_store import DynamoPartialStore
from schemas.timestamps import format_iso8601
from shardflow.input import OutgoingRecord
from shardflow.produce import ProduceReport, produce
from streams.kcl_launcher import KclUnavailable, jars_dir
from streams.kinesis_producer import KinesisProducer
from tests.conftest import AwsEnv, Emulator
from tests.integration.events import page_view_lines
from tests.integration.rerun import assert_same_as_clean_run
from tests.integration.resharding import (
    check_lineage_progress,
    expected_with_lineage,
    is_open,
    list_shards,
    merge_adjacent,
    open_shards,
    parents_of,
    phase_lines,
    split_in_half,
)
from tests.kinesis_local import make_kinesis_local_env
from tests.oracle import (
    Expected,
    assert_matches,
    compute,
    dead_letter_ids,
    drain_queue,
    read_stream,
)

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

EVENTS = 4_000
RATE = 40.0  # events/s: the stream keeps filling while a worker dies and another takes over
DEADLINE_S = 540.0
PHASE = 600
"""Events per phase of the resharding test (before, between and after two reshards)."""
LEAD = 60
"""On-time events opening each phase after a reshard (tests/integration/resharding.py)."""
PROPERTIES = {
    "failoverTimeMillis": "4000",
    "shardSyncIntervalMillis": "5000",
    "idleTimeBetweenReadsInMillis": "500",
    "parentShardPollIntervalMillis": "2000",
    "shutdownGraceMillis": "20000",
}


def _require_kcl() -> None:
    if shutil.which("java") is None:
        pytest.fail("the KCL runner needs Java (17) on PATH", pytrace=False)
    try:
        jars_dir()
    except KclUnavailable as exc:
        pytest.fail(f"{exc} (`make test` installs the kcl extra)", pytrace=False)


def _wait_for(what: str, check: Callable[[], bool], deadline: float, logs: list[Path]) -> None:
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs)
            pytest.fail(f"timed out waiting for {what}\n{tails}", pytrace=False)
        time.sleep(1.0)


class Worker:
    def __init__(self, aws: AwsEnv, name: str, application: str, log: Path) -> None:
        self.name, self.log = name, log
        props = {**PROPERTIES, "workerId": name}
        command = [
            *aws.cli(),
            "run",
            "page-views",
            "--runner",
            "kcl",
            "--flush-interval",
            "0.5",
            "--kcl-application",
            application,
            *(arg for key, value in props.items() for arg in ("--kcl-property", f"{key}={value}")),
        ]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=aws.env, stdout=out, stderr=subprocess.STDOUT
            )


def _leases(aws: AwsEnv, application: str) -> dict[str, dict[str, Any]]:
    try:
        items = aws.clients.dynamodb.scan(TableName=application, ConsistentRead=True)["Items"]
    except aws.clients.dynamodb.exceptions.ResourceNotFoundException:
        return {}
    return {item["leaseKey"]["S"]: item for item in items}


def _owners(aws: AwsEnv, application: str) -> dict[str, str]:
    return {
        key: item.get("leaseOwner", {}).get("S", "")
        for key, item in _leases(aws, application).items()
    }


def _leader(aws: AwsEnv, application: str) -> str | None:
    """The worker holding the KCL 3 leader lock (it assigns every lease)."""
    try:
        items = aws.clients.dynamodb.scan(
            TableName=f"{application}-CoordinatorState", ConsistentRead=True
        )["Items"]
    except aws.clients.dynamodb.exceptions.ResourceNotFoundException:
        return None
    owners = [item["ownerName"]["S"] for item in items if "ownerName" in item]
    return owners[0] if owners else None


def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    emulator: Emulator, kinesis_local: str, tmp_path: Path
) -> None:
    _require_kcl()
    seed = int(os.environ.get("SHARDFLOW_KCL_SEED") or random.randrange(1_000_000))
    print(f"SHARDFLOW_KCL_SEED={seed}")
    rng = random.Random(seed)
    aws = make_kinesis_local_env(emulator, kinesis_local, shards=4)
    application = f"t-kcl-{aws.settings.stream}"
    records = [
        OutgoingRecord(line, f"k{rng.randrange(10**9)}", i)
        for i, line in enumerate(page_view_lines(EVENTS, seed=seed))
    ]
    deadline = time.monotonic() + DEADLINE_S
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    a = Worker(aws, "worker-a", application, logs[0])
    b = Worker(aws, "worker-b", application, logs[1])
    produced: list[ProduceReport] = []

    def write() -> None:
        with KinesisProducer(aws.clients.kinesis, aws.settings.stream) as producer:
            produced.append(produce(producer, records, rate=RATE))

    writer = threading.Thread(target=write)
    writer.start()
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    try:
        # Both workers hold leases, and each has made some of its shards durable.
        def both_working() -> bool:
            owners = _owners(aws, application)
            progress = {p.shard_id: p for p in store.read_progress("page-views")}
            durable = {s for s, p in progress.items() if p.checkpoint is not None}
            return len(owners) == 4 and all(
                any(owner == w.name and shard in durable for shard, owner in owners.items())
                for w in (a, b)
            )

        _wait_for("both workers to hold leases and checkpoint", both_working, deadline, logs)
        assert writer.is_alive(), "the producer finished before the kill: raise EVENTS"
        # The harder case: the victim is the KCL 3 leader, which assigns every lease. The
        # other worker takes over once the leader lock (120 s) has expired.
        if _leader(aws, application) == b.name:
            a, b = b, a
        print(f"killing {a.name}, the leader")
        killed_at = time.monotonic()
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        _wait_for(
            "worker-b to take every lease",
            lambda: set(_owners(aws, application).values()) == {b.name},
            deadline,
            logs,
        )
        print(f"takeover after {time.monotonic() - killed_at:.0f}s")
        writer.join()
        assert produced and not produced[0].failures and produced[0].sent == EVENTS
        shards = read_stream(aws.clients.kinesis, aws.settings.stream)
        last = {shard: int(items[-1][0]) for shard, items in shards.items() if items}

        def all_durable() -> bool:
            progress = {p.shard_id: p for p in store.read_progress("page-views")}
            return all(
                shard in progress
                and progress[shard].checkpoint is not None
                and progress[shard].checkpoint.sequence == sequence  # type: ignore[union-attr]
                for shard, sequence in last.items()
            )

        _wait_for("every record to be durable", all_durable, deadline, logs)
        b.process.send_signal(signal.SIGTERM)
        assert b.process.wait(timeout=120) == 0, logs[1].read_text()[-4000:]
    finally:
        for worker in (a, b):
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        writer.join()
        store.close()

    _check_results(aws, shards, compute(shards))


def _check_results(
    aws: AwsEnv, shards: Mapping[str, Sequence[tuple[Any, ...]]], expected: Expected
) -> None:
    """The query equals the oracle and one clean run exactly; the dead-letter queue holds
    exactly the invalid and late events."""
    query = subprocess.run(
        [*aws.cli(), "query", "page-views", "--format", "json"],
        env=aws.env,
        capture_output=True,
        timeout=120,
    )
    assert query.returncode == 0, query.stderr.decode()
    stored = json.loads(query.stdout)
    starts = {(key, format_iso8601(start)): start for key, start in expected.windows}
    for row in stored:
        # Quiet shards may have been marked idle (wall clock): that makes windows final
        # earlier, never later, than the oracle's all-shards rule.
        start = starts[(row["key"], row["window_start"])]
        assert row["final"] or not expected.final(start), row
        row["final"] = expected.final(start)
    assert_matches(stored, expected)
    assert_same_as_clean_run(stored, shards)
    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert dead_letter_ids(letters, "invalid") == expected.invalid
    assert dead_letter_ids(letters, "late") == expected.late


def test_split_and_merge_under_the_kcl(
    emulator: Emulator, kinesis_local: str, tmp_path: Path
) -> None:
    """Shard 0 split, then its upper child merged with shard 1, while a KCL worker reads:
    every parent ends before its children start (the KCL's rule, with the children
    registered in the results table first), and the results are exact."""
    _require_kcl()
    seed = int(os.environ.get("SHARDFLOW_KCL_SEED") or random.randrange(1_000_000))
    print(f"SHARDFLOW_KCL_SEED={seed}")
    rng = random.Random(seed)
    aws = make_kinesis_local_env(emulator, kinesis_local, shards=2)
    kinesis, stream = aws.clients.kinesis, aws.settings.stream
    phases = [
        [
            OutgoingRecord(line, f"k{rng.randrange(10**9)}", first + i)
            for i, line in enumerate(phase_lines(first, PHASE, seed, LEAD if first else 0))
        ]
        for first in (0, PHASE, 2 * PHASE)
    ]
    deadline = time.monotonic() + DEADLINE_S
    log = tmp_path / "worker.log"
    worker = Worker(aws, "worker", f"t-kcl-{stream}", log)
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    try:
        with KinesisProducer(kinesis, stream) as producer:
            reports = [produce(producer, phases[0], rate=300)]
            _wait_for(
                "the worker to checkpoint both shards",
                lambda: (
                    sum(p.checkpoint is not None for p in store.read_progress("page-views")) == 2
                ),
                deadline,
                [log],
            )
            split_in_half(kinesis, stream, open_shards(kinesis, stream)[0]["ShardId"])
            reports.append(produce(producer, phases[1], rate=300))
            lower, upper = (s["ShardId"] for s in open_shards(kinesis, stream)[1:])
            merge_adjacent(kinesis, stream, lower, upper)
            reports.append(produce(producer, phases[2], rate=300))
        assert all(not r.failures for r in reports)
        shards = list_shards(kinesis, stream)
        records = read_stream(kinesis, stream)

        def all_durable() -> bool:
            progress = {p.shard_id: p for p in store.read_progress("page-views")}
            for shard in shards:
                state = progress.get(shard["ShardId"])
                if state is None:
                    return False
                if not is_open(shard):
                    if not state.ended:
                        return False
                    continue
                items = records.get(shard["ShardId"])
                if items and (
                    state.checkpoint is None or state.checkpoint.sequence != int(items[-1][0])
                ):
                    return False
            return True

        _wait_for("every shard to be read (parents to their ends)", all_durable, deadline, [log])
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=120) == 0, log.read_text()[-4000:]
        assert len(shards) == 5 and len(parents_of(shards)) == 3, shards
        check_lineage_progress(store.read_progress("page-views"), shards)
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
        store.close()
    assert sum(len(each) for each in records.values()) == 3 * PHASE
    _check_results(aws, records, expected_with_lineage(records, shards))
