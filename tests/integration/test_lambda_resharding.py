"""The Lambda runner through a split and a merge, on kinesis-local (real shard ends;
DynamoDB, SQS and SNS stay on moto).

The event source mapping (ESM) is played in-process, as Lambda runs it: it polls each
shard from its oldest record, one batch at a time per shard (shards in turn, as if
concurrently), invokes ``handler`` with the batch in the documented event shape, and
retries a batch from the record the partial batch response names until it succeeds. It
starts a child shard only once it has read every parent to its end. ``finalize_handler``
is the one-minute schedule, called between the phases and at the end.

The stream starts with two shards. Events go in before, between and after two reshards:
shard 0 is split at the middle of its hash key range, then the upper child is merged with
shard 1 (parents from two generations). The finalizer runs once after the split before
the ESM reaches the children (it ends the parent and registers the children), and once
after the merge after the ESM has already invoked the merged child (the handler registers
it, at the frontier of that moment, before its parents are recorded as ended): both orders
happen under Lambda. One flush fails halfway, and the ESM retries it. Then, as
tests/integration/test_resharding.py checks the embedded runner:

- each Kinesis record reached the handler once (apart from the retried batch), and no
  child was invoked before the ESM had read its parents to their end;
- the finalizer recorded every closed shard as ended, and no shard idle (the test is far
  shorter than page-views' one-minute ``idle_timeout_ms``, so finality here rests on the
  ended-shard logic alone); the stored progress has every child registered with a
  watermark floor no higher than its parents' watermark;
- the stored aggregates equal tests/oracle.py's computation over every shard (finality
  decided by the shards still open) and one clean in-memory run, exactly; the dead-letter
  queue holds exactly the invalid and late events;
- the finalizer wrote one final row for exactly the windows final across the reshards,
  equal to the merge of their partial rows, parents' rows included.

``SHARDFLOW_RESHARD_SEED=N`` replays a run.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from processors.pipelines.page_views import PAGE_VIEWS
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.windowing.rows import StoredRow
from shardflow.input import OutgoingRecord
from shardflow.produce import produce
from streams import lambda_handler
from streams.kinesis_producer import KinesisProducer
from tests.conftest import AwsEnv
from tests.integration.resharding import (
    check_finals,
    check_lineage_progress,
    check_results,
    list_shards,
    merge_adjacent,
    open_shards,
    parents_of,
    phase_lines,
    split_in_half,
)
from tests.integration.test_lambda_emulator import OK, set_lambda_env
from tests.lambda_events import esm_event

pytestmark = [pytest.mark.emulator, pytest.mark.kinesis_local, pytest.mark.slow]

PHASE = 400
"""Events per phase: 1,200 events, four minutes of event time (kinesis-local takes a few
hundred records a second)."""
LEAD = 60
"""On-time events opening each phase after a reshard (tests/integration/resharding.py)."""
BATCH_SIZE = 100
"""Kinesis records per ESM batch (the template's is 500; smaller gives several batches a
shard and phase)."""


class EventSourceMapping:
    """Lambda's Kinesis ESM, in-process (``StartingPosition: TRIM_HORIZON``,
    ``ParallelizationFactor: 1``, ``ReportBatchItemFailures``, retries without limit)."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self.arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
            "StreamARN"
        ]
        self._iterators: dict[str, str] = {}
        self.read_to_end: list[str] = []
        self.delivered = 0
        """Kinesis records delivered (a retried batch counts once)."""
        self.retries = 0
        self.batches: list[tuple[str, frozenset[str]]] = []
        """(shard, the shards read to their end by then) of each batch, in order."""

    def drain(self) -> None:
        """Poll the shards in turn until each one the ESM may read is at its tip or read
        to its end."""
        while True:
            shards = list_shards(self._kinesis, self._stream)
            lineage = parents_of(shards)
            ready = [
                str(shard["ShardId"])
                for shard in shards
                if shard["ShardId"] not in self.read_to_end
                and all(parent in self.read_to_end for parent in lineage.get(shard["ShardId"], ()))
            ]
            busy = [self._poll(shard_id) for shard_id in ready]
            if not any(busy):
                return

    def _poll(self, shard_id: str) -> bool:
        """One GetRecords on the shard, and one invocation with what it returned. True
        while there is more to do on it."""
        iterator = (
            self._iterators.get(shard_id)
            or self._kinesis.get_shard_iterator(
                StreamName=self._stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        )
        response = self._kinesis.get_records(ShardIterator=iterator, Limit=BATCH_SIZE)
        records = response["Records"]
        if records:
            self._invoke(shard_id, records)
        following = response.get("NextShardIterator")
        if following is None:
            self.read_to_end.append(shard_id)
            return True  # its children may start
        self._iterators[shard_id] = following
        return bool(records) or bool(response.get("MillisBehindLatest"))

    def _invoke(self, shard_id: str, records: Sequence[dict[str, Any]]) -> None:
        """Invoke the function until the batch succeeds, retrying from the record the
        partial batch response names."""
        self.batches.append((shard_id, frozenset(self.read_to_end)))
        self.delivered += len(records)
        batch = list(records)
        for _ in range(5):
            context = SimpleNamespace(aws_request_id=str(uuid.uuid4()))
            response = lambda_handler.handler(esm_event(self.arn, shard_id, batch), context)
            if response == OK:
                return
            (failure,) = response["batchItemFailures"]
            retry_from = int(failure["itemIdentifier"])
            batch = [r for r in batch if int(r["SequenceNumber"]) >= retry_from]
            assert batch, response
            self.retries += 1
        raise AssertionError(f"shard {shard_id}: the batch kept failing")


class FlakyRows:
    """Makes the next flush fail after its first row is written (a dropped connection),
    once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.failed = 0
        write_rows = DynamoPartialStore.write_rows

        def write(store: DynamoPartialStore, rows: Sequence[StoredRow]) -> None:
            if self.armed and len(rows) > 1:
                self.armed = False
                self.failed += 1
                write_rows(store, rows[:1])
                raise ConnectionError("dropped in the middle of the rows")
            write_rows(store, rows)

        monkeypatch.setattr(DynamoPartialStore, "write_rows", write)


@pytest.fixture
def lambda_kinesis_local(
    aws_kinesis_local: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AwsEnv]:
    """Both functions' environment, pointing at the test's resources (Kinesis on
    kinesis-local)."""
    set_lambda_env(aws_kinesis_local, monkeypatch)
    yield aws_kinesis_local
    lambda_handler.reset()


def _seed() -> int:
    return int(os.environ.get("SHARDFLOW_RESHARD_SEED") or random.randrange(1_000_000))


def _put(kinesis: Any, stream: str, lines: Sequence[bytes], rng: random.Random) -> None:
    records = [OutgoingRecord(line, f"k{rng.randrange(10**9)}", i) for i, line in enumerate(lines)]
    with KinesisProducer(kinesis, stream) as producer:
        report = produce(producer, records)
    assert not report.failures, report.failures[:3]
    assert report.sent == len(records)


def _finalize(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One scheduled pass; its page-views summary."""
    summary: dict[str, Any] = lambda_handler.finalize_handler({}, None)[PAGE_VIEWS.name]
    assert summary["error"] is None, summary
    passes.append(summary)
    return summary


def test_lambda_through_a_split_and_a_merge_gives_exact_totals(
    lambda_kinesis_local: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = lambda_kinesis_local
    seed = _seed()
    print(f"SHARDFLOW_RESHARD_SEED={seed}")
    rng = random.Random(seed)
    kinesis, stream = aws.clients.kinesis, aws.settings.stream
    esm = EventSourceMapping(kinesis, stream)
    flaky = FlakyRows(monkeypatch)
    store = DynamoPartialStore(aws.clients.dynamodb, aws.settings.table)
    passes: list[dict[str, Any]] = []

    # Before the reshards: both shards are invoked, and the handler registers them.
    _put(kinesis, stream, phase_lines(0, PHASE, seed), rng)
    esm.drain()
    assert _finalize(passes)["ended"] == []
    assert sum(p.max_event_time is not None for p in store.read_progress(PAGE_VIEWS.name)) == 2

    # The split; the schedule comes before the ESM reaches the children: the finalizer
    # finds the parent read to its end, registers both children at the frontier, and
    # records the parent's end.
    parent, _ = (s["ShardId"] for s in open_shards(kinesis, stream))
    split_in_half(kinesis, stream, parent)
    assert _finalize(passes)["ended"] == [parent]
    progress = {p.shard_id: p for p in store.read_progress(PAGE_VIEWS.name)}
    children = [c for c, ps in parents_of(list_shards(kinesis, stream)).items() if parent in ps]
    assert len(children) == 2
    assert all(progress[c].watermark_floor is not None for c in children), progress

    # Between the reshards, with a flush that fails halfway and is retried.
    _put(kinesis, stream, phase_lines(PHASE, PHASE, seed, LEAD), rng)
    flaky.armed = True
    esm.drain()
    assert flaky.failed == 1 and esm.retries == 1
    assert _finalize(passes)["ended"] == []

    # The merge; the ESM reads both parents to their end and invokes the merged child
    # before the schedule: the handler registers it (its parents not ended yet), and the
    # next pass records both parents' ends.
    upper, neighbour = (s["ShardId"] for s in open_shards(kinesis, stream)[1:])
    merge_adjacent(kinesis, stream, upper, neighbour)
    _put(kinesis, stream, phase_lines(2 * PHASE, PHASE, seed, LEAD), rng)
    esm.drain()
    (merged,) = (c for c, ps in parents_of(list_shards(kinesis, stream)).items() if len(ps) == 2)
    assert merged in {s for s, _ in esm.batches}
    progress = {p.shard_id: p for p in store.read_progress(PAGE_VIEWS.name)}
    assert progress[merged].watermark_floor is not None, progress[merged]
    assert not progress[upper].ended and not progress[neighbour].ended
    assert sorted(_finalize(passes)["ended"]) == sorted([upper, neighbour])
    last = _finalize(passes)  # nothing new: the same state, no error
    assert last["ended"] == [] and last["registered"] == []

    total = 3 * PHASE
    shards = list_shards(kinesis, stream)
    lineage = parents_of(shards)
    assert len(shards) == 5 and len(lineage) == 3, shards
    assert sorted(len(parents) for parents in lineage.values()) == [1, 1, 2]

    # The ESM: every record delivered once, children only after their parents' ends.
    assert esm.delivered == total
    for shard_id, finished in esm.batches:
        assert set(lineage.get(shard_id, ())) <= finished, (shard_id, finished)
    closed = {
        str(s["ShardId"]) for s in shards if "EndingSequenceNumber" in s["SequenceNumberRange"]
    }
    assert set(esm.read_to_end) == closed

    # The finalizer: every closed shard recorded ended by it, once; nothing idle.
    ended = [shard for summary in passes for shard in summary["ended"]]
    assert sorted(ended) == sorted(closed)
    assert all(summary["idle"] == [] for summary in passes), passes
    check_lineage_progress(store.read_progress(PAGE_VIEWS.name), shards)

    expected, _ = check_results(aws, total, shards)
    check_finals(store, expected, shards)
    store.close()
