"""Exactly-once under crashes: SIGKILL the runner at random points while a producer is
writing, restart it each time, and require the stored aggregates to equal the independent
computation exactly (the two sketches within their documented error), to equal a clean
in-memory run of the engine over the same shards exactly (sketches included), and every
invalid or late event to be in the dead-letter queue.

Set SHARDFLOW_CRASH_SEED to replay a failing run; the seed is printed on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from processors.sinks.dynamodb_store import DynamoPartialStore
from shardflow.input import OutgoingRecord
from shardflow.produce import ProduceReport, produce
from streams.kinesis_producer import KinesisProducer, ProducerConfig
from tests.conftest import Emulator, make_aws_env
from tests.integration.events import page_view_lines
from tests.integration.kpl_reader import deaggregated
from tests.integration.rerun import assert_same_as_clean_run
from tests.oracle import assert_matches, compute, dead_letter_ids, drain_queue, read_stream

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def _seed() -> int:
    return int(os.environ.get("SHARDFLOW_CRASH_SEED") or random.randrange(1_000_000))


@pytest.mark.parametrize("round_", [1, 2])
def test_sigkill_under_load_then_exact_aggregates(emulator: Emulator, round_: int) -> None:
    seed = _seed()
    print(f"SHARDFLOW_CRASH_SEED={seed}")
    rng = random.Random(seed)
    aws = make_aws_env(emulator, shards=3)
    lines = page_view_lines(9_000, seed=seed)
    records = [OutgoingRecord(line, f"k{rng.randrange(10**9)}", i) for i, line in enumerate(lines)]

    produced: list[ProduceReport] = []

    # The second round packs the events into KPL aggregates: kills then land inside them,
    # and restarts resume from a sub-sequence checkpoint.
    config = ProducerConfig(aggregate=round_ == 2)

    def write() -> None:
        with KinesisProducer(aws.clients.kinesis, aws.settings.stream, config) as producer:
            produced.append(produce(producer, records, rate=1_200))

    writer = threading.Thread(target=write)
    writer.start()

    run = [*aws.cli(), "run", "page-views", "--flush-interval", "0.2"]
    kills = 0
    while writer.is_alive() or kills < 5:
        runner = subprocess.Popen(
            run, env=aws.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.6, 2.5))
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        kills += 1
    writer.join()
    assert produced and not produced[0].failures, "the producer lost records"
    assert produced[0].sent == len(records)

    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    progress = store.read_progress("page-views")
    assert any(p.checkpoint is not None for p in progress), "no run got far enough to checkpoint"

    final = subprocess.run(
        [*run, "--until-idle", "2"], env=aws.env, capture_output=True, timeout=300
    )
    assert final.returncode == 0, final.stderr.decode()[-3000:]

    query = subprocess.run(
        [*aws.cli(), "query", "page-views", "--format", "json"],
        env=aws.env,
        capture_output=True,
        timeout=120,
    )
    assert query.returncode == 0, query.stderr.decode()
    shards = deaggregated(read_stream(aws.clients.kinesis, aws.settings.stream))
    assert sum(len(user) for user in shards.values()) == len(records)
    expected = compute(shards)
    stored = json.loads(query.stdout)
    assert_matches(stored, expected)  # the sketches within their error bounds
    assert_same_as_clean_run(stored, shards)  # and all six exactly as one clean run

    letters = drain_queue(aws.clients.sqs, aws.queue_url)
    assert dead_letter_ids(letters, "invalid") == expected.invalid
    assert dead_letter_ids(letters, "late") == expected.late
    by_id: dict[str, dict[str, object]] = {}
    for letter in letters:
        # A crash between sending and checkpointing may send a letter again: identically.
        assert by_id.setdefault(str(letter["dead_letter_id"]), letter) == letter
    store.close()
