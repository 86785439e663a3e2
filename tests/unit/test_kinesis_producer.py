"""KinesisProducer against an in-memory stream (tests/unit/fake_put_kinesis.py): real hash
key ranges, resharding, and injected failures. Every test reads the stream back and checks
what a consumer would see: each event exactly once, on a shard whose range holds it, with
a PutResult that points at it.

Timing: a tiny linger and a fast backoff (``retry_base_s``/``retry_cap_s`` are config), so
the retry storms below take milliseconds; only the rate-limit tests take real seconds.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace

import pytest
from botocore.exceptions import ClientError

from streams.aws_errors import ResourceMissing
from streams.kinesis_producer import (
    BufferFull,
    KinesisProducer,
    ProduceFailed,
    ProducerClosed,
    ProducerConfig,
    PutResult,
    RecordRejected,
)
from streams.producer_api import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    PAYLOAD_UNIT_BYTES,
)
from streams.shard_map import MAX_HASH_KEY, hash_key_of
from tests.unit.fake_put_kinesis import (
    ENTRY_MESSAGES,
    INTERNAL,
    STREAM,
    THROTTLED,
    FakePutKinesis,
    access_denied,
    connection_error,
    effective_hash_key,
    fail_keys,
    kms_disabled,
    raise_in_turn,
    random_call_faults,
    random_entry_faults,
    server_error,
    throttling_error,
)

FAST = ProducerConfig(
    linger_ms=1, retry_base_s=0.001, retry_cap_s=0.02, record_ttl_s=30, max_calls_in_flight=4
)
HOLD = 60_000.0
"""A linger no test waits for: records go only on flush or close."""


def fast(**changes: object) -> ProducerConfig:
    return replace(FAST, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Event:
    data: bytes
    key: str
    explicit_hash_key: str | None = None


def make_events(
    count: int,
    rng: random.Random,
    *,
    keys: Sequence[str] | None = None,
    max_size: int = 300,
    explicit_share: float = 0.0,
    tag: str = "e",
) -> list[Event]:
    """``count`` events with unique data (so each can be found once in the stream)."""
    events = []
    for n in range(count):
        key = rng.choice(keys) if keys else f"user-{rng.randrange(10**9)}"
        head = f"{tag}{n}|{key}|".encode()
        data = head + rng.randbytes(rng.randrange(max(0, max_size - len(head)) + 1))
        explicit = None
        if rng.random() < explicit_share:
            explicit = str(rng.choice([0, MAX_HASH_KEY, rng.randrange(MAX_HASH_KEY + 1)]))
        events.append(Event(data, key, explicit))
    return events


def start(kinesis: FakePutKinesis, config: ProducerConfig = FAST) -> KinesisProducer:
    return KinesisProducer(kinesis, STREAM, config)  # type: ignore[arg-type]


def put_all(producer: KinesisProducer, events: Sequence[Event]) -> list[Future[PutResult]]:
    return [producer.put(e.data, e.key, explicit_hash_key=e.explicit_hash_key) for e in events]


def outcomes(futures: Sequence[Future[PutResult]], timeout: float = 30) -> list[PutResult]:
    """Every future's result; fails the test if one is pending or failed."""
    _, pending = wait_futures(futures, timeout)
    assert not pending, f"{len(pending)} futures still pending"
    return [f.result(0) for f in futures]


def produce(
    kinesis: FakePutKinesis,
    events: Sequence[Event],
    config: ProducerConfig = FAST,
    *,
    backlog: bool = False,
) -> tuple[KinesisProducer, list[PutResult]]:
    """Put ``events``, flush, close. ``backlog``: calls wait until every event is put, so
    the producer faces a backlog (deterministically) rather than a trickle."""
    producer = start(kinesis, config)
    try:
        if backlog:
            kinesis.gate.clear()
        try:
            futures = put_all(producer, events)
        finally:
            kinesis.gate.set()
        assert producer.flush(timeout=20), f"{producer.buffered} records never got a fate"
    finally:
        producer.close(timeout=1)
    return producer, outcomes(futures, 1)


# -- what a consumer reads back ------------------------------------------------------------


def assert_exactly_once(
    kinesis: FakePutKinesis, events: Sequence[Event], results: Sequence[PutResult]
) -> None:
    """Every event is in the stream once, with its key, and its PutResult points at it."""
    read = kinesis.user_records()
    landed = Counter(r.record.data for r in read)
    duplicated = [d[:20] for d, n in landed.items() if n > 1]
    assert not duplicated, f"duplicated: {duplicated[:5]}"
    missing = [e.data[:20] for e in events if e.data not in landed]
    assert not missing, f"lost: {missing[:5]}"
    assert landed == Counter(e.data for e in events), "something landed that was never put"
    for event, result in zip(events, results, strict=True):
        record = kinesis.find(result.shard_id, result.sequence_number)
        assert record is not None, f"{result} points at no record"
        users = record.user_records()
        assert 0 <= result.sub_sequence_number < len(users), result
        user = users[result.sub_sequence_number]
        assert user.data == event.data, f"{result} points at another record"
        assert user.partition_key == event.key
        if event.explicit_hash_key is not None:  # the caller's key is kept (sent alone)
            assert len(users) == 1
            assert record.explicit_hash_key == event.explicit_hash_key
        if len(users) == 1:
            assert result.sub_sequence_number == 0


def assert_in_range(kinesis: FakePutKinesis) -> None:
    """No user record sits on a shard whose range does not hold its hash key (a KCL
    consumer would drop it while deaggregating)."""
    for read in kinesis.user_records():
        shard = kinesis.shards[read.landed.shard_id]
        key = effective_hash_key(read.record)
        assert shard.holds(key), (
            f"{read.record.partition_key!r} (hash key {key}) is on {shard.shard_id} "
            f"[{shard.start}, {shard.end}]"
        )


def assert_within_limits(kinesis: FakePutKinesis, config: ProducerConfig) -> None:
    for call in kinesis.calls:
        assert 1 <= len(call.entries) <= MAX_RECORDS_PER_CALL
        assert call.size <= MAX_BYTES_PER_CALL
        for entry, users in zip(call.entries, call.users, strict=True):
            size = len(entry["Data"]) + len(entry["PartitionKey"].encode())
            assert size <= MAX_RECORD_BYTES
            if len(users) > 1:
                assert config.aggregate
                assert size <= config.max_aggregate_bytes
    assert not [c for c in kinesis.calls if c.raised and "Validation" in str(c.raised)]


def is_throttle(raised: BaseException | None) -> bool:
    return isinstance(raised, ClientError) and raised.response["Error"]["Code"] == THROTTLED


def assert_stats_match_the_stream(
    producer: KinesisProducer, kinesis: FakePutKinesis, events: int, failed: int = 0
) -> None:
    stats = producer.stats
    landed = kinesis.landed
    read = kinesis.user_records()
    assert stats.events == events
    assert stats.sent == len(read) == events - failed
    assert stats.failed == failed
    assert stats.kinesis_records == len(landed)
    assert stats.put_calls == len(kinesis.calls)
    assert stats.bytes_sent == sum(r.size for r in landed)
    assert stats.payload_units == sum(math.ceil(r.size / PAYLOAD_UNIT_BYTES) for r in landed)
    # Kinesis records throttled: entry by entry, or a whole call's worth at once.
    assert stats.throttled == sum(
        len(c.entries) if is_throttle(c.raised) else c.error_codes.count(THROTTLED)
        for c in kinesis.calls
    )
    assert stats.shards == Counter(r.landed.shard_id for r in read)
    if not failed:  # each user record of a failed entry or a failed call was retried once
        resent = 0
        for call in kinesis.calls:
            for n, users in enumerate(call.users):
                if call.raised or "ErrorCode" in call.results[n]:
                    resent += len(users)
        assert stats.retried == resent
    assert producer.buffered == 0


# -- results ---------------------------------------------------------------------------------


def test_each_result_names_the_shard_the_stream_put_the_record_on() -> None:
    kinesis = FakePutKinesis(shards=4, page_size=3)  # the listing takes two pages
    events = make_events(300, random.Random(1), explicit_share=0.1)

    producer, results = produce(kinesis, events)

    assert_exactly_once(kinesis, events, results)
    shards = kinesis.shard_map()
    for event, result in zip(events, results, strict=True):
        predicted = shards.shard_for(hash_key_of(event.key, event.explicit_hash_key))
        assert result.shard_id == predicted
        assert result.sub_sequence_number == 0
    assert len({r.shard_id for r in results}) == 4
    assert kinesis.landed and not any(r.aggregated for r in kinesis.landed)
    # The producer's own map was right: it listed the shards once (two pages), and never
    # saw a record land where it had not predicted (which would make it list them again).
    assert kinesis.list_shards_calls == 2
    assert_stats_match_the_stream(producer, kinesis, 300)


def test_aggregated_results_carry_their_index_inside_the_aggregate() -> None:
    kinesis = FakePutKinesis(shards=3, page_size=1)
    events = make_events(600, random.Random(2), max_size=100, explicit_share=0.05)
    config = fast(aggregate=True, max_aggregate_bytes=4 * 1024, linger_ms=HOLD)

    producer, results = produce(kinesis, events, config)

    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)
    shards = kinesis.shard_map()
    by_record: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event, result in zip(events, results, strict=True):
        assert result.shard_id == shards.shard_for(hash_key_of(event.key, event.explicit_hash_key))
        by_record[result.shard_id, result.sequence_number].append(result.sub_sequence_number)
    for (shard_id, sequence), subs in by_record.items():
        record = kinesis.find(shard_id, sequence)
        assert record is not None
        assert sorted(subs) == list(range(len(record.user_records())))
    assert max(len(s) for s in by_record.values()) > 10  # they were aggregated
    assert producer.stats.kinesis_records == len(by_record) < 600
    assert_within_limits(kinesis, config)
    assert_stats_match_the_stream(producer, kinesis, 600)


# -- nothing lost, nothing duplicated, whatever fails ----------------------------------------


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
@pytest.mark.parametrize("seed", range(8))
def test_under_injected_failures_every_event_lands_exactly_once(seed: int, aggregate: bool) -> None:
    rng = random.Random(seed)
    kinesis = FakePutKinesis(
        shards=rng.randint(1, 5),
        entry_fault=random_entry_faults(rng.uniform(0.1, 0.5), seed),
        call_fault=random_call_faults(rng.uniform(0.0, 0.3), seed),
        page_size=rng.choice([None, 1, 2]),
    )
    few_keys = [f"k{n}" for n in range(rng.randint(1, 20))]
    events = make_events(
        rng.randint(1, 900),
        rng,
        keys=rng.choice([None, few_keys]),
        max_size=rng.choice([50, 400, 2000]),
        explicit_share=rng.choice([0.0, 0.1]),
    )
    config = fast(
        aggregate=aggregate,
        max_aggregate_bytes=rng.choice([4096, 16 * 1024]),
        linger_ms=rng.choice([0.5, 2.0, 10.0]),
        max_calls_in_flight=rng.choice([1, 4]),
    )

    producer, results = produce(kinesis, events, config)

    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)
    assert_within_limits(kinesis, config)
    assert_stats_match_the_stream(producer, kinesis, len(events))


@pytest.mark.parametrize(
    "error",
    [
        throttling_error,
        server_error,
        lambda: server_error("ServiceUnavailable", 503),
        connection_error,
    ],
    ids=["throttling", "500", "503", "connection"],
)
def test_whole_call_errors_that_pass_are_retried(error: Callable[[], BaseException]) -> None:
    kinesis = FakePutKinesis(shards=2, call_fault=raise_in_turn(error(), error()))
    events = make_events(40, random.Random(3))

    producer, results = produce(kinesis, events, fast(linger_ms=HOLD))

    assert_exactly_once(kinesis, events, results)
    raised = [c for c in kinesis.calls if c.raised is not None]
    assert [c.index for c in raised] == [0, 1]
    assert len(raised[0].entries) == 40  # all of them, then the retries (each its backoff)
    assert producer.stats.retried == 40 + len(raised[1].entries)
    assert_stats_match_the_stream(producer, kinesis, 40)


def test_a_record_that_keeps_failing_fails_after_its_ttl_with_the_last_error_code() -> None:
    # The poison record fails with InternalFailure once, then is throttled for ever.
    kinesis = FakePutKinesis(shards=2, entry_fault=fail_keys(["poison"], -1, [INTERNAL, THROTTLED]))
    events = make_events(50, random.Random(4))
    with start(kinesis, fast(record_ttl_s=0.3)) as producer:
        poison = producer.put(b"poison pill", "poison")
        futures = put_all(producer, events)
        began = time.monotonic()
        with pytest.raises(ProduceFailed) as failure:
            poison.result(timeout=10)
        waited = time.monotonic() - began

    assert 0.1 < waited < 5
    reason = failure.value.reason
    assert f"{THROTTLED}:" in reason
    assert INTERNAL not in reason
    assert "attempts" in reason
    assert kinesis.sends_of(b"poison pill") >= 3
    assert b"poison pill" not in kinesis.landed_data()
    assert_exactly_once(kinesis, events, outcomes(futures))
    assert_stats_match_the_stream(producer, kinesis, 51, failed=1)


@pytest.mark.parametrize(
    ("error", "code"),
    [(access_denied, "AccessDeniedException"), (kms_disabled, "KMSDisabledException")],
)
def test_errors_that_do_not_pass_fail_the_call_s_records_at_once(
    error: Callable[[], ClientError], code: str
) -> None:
    kinesis = FakePutKinesis(shards=2, call_fault=raise_in_turn(error()))
    doomed = make_events(20, random.Random(5), tag="doomed")
    later = make_events(5, random.Random(6), tag="later")
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        futures = put_all(producer, doomed)
        assert producer.flush(10)
        for future in futures:
            with pytest.raises(ProduceFailed, match=code):
                future.result(timeout=5)
        assert len(kinesis.calls) == 1  # not retried
        after = put_all(producer, later)

    assert producer.stats.failed == 20
    assert producer.stats.retried == 0
    assert_exactly_once(kinesis, later, outcomes(after))


def test_a_stream_deleted_while_producing_fails_the_records_with_the_reason() -> None:
    kinesis = FakePutKinesis(shards=1)
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        kinesis.delete_stream()
        future = producer.put(b"x", "k")
        assert producer.flush(10)
        with pytest.raises(ProduceFailed, match=r"clickstream.*not found"):
            future.result(timeout=5)
    assert len(kinesis.calls) == 1


def test_a_missing_stream_fails_at_construction() -> None:
    kinesis = FakePutKinesis(stream="another-stream")
    with pytest.raises(ResourceMissing, match=r"clickstream.*shardflow up"):
        start(kinesis)
    assert kinesis.calls == []


# -- records Kinesis could never take ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "explicit"),
    [
        (b"x", "", None),
        (b"x", "k" * 257, None),
        (b"x" * (MAX_RECORD_BYTES - 2), "key", None),  # 1 MiB + 1 with its key
        (b"x", "k", "abc"),
        (b"x", "k", "-1"),
        (b"x", "k", str(MAX_HASH_KEY + 1)),
        (b"x", "k", ""),
    ],
    ids=[
        "empty-key",
        "257-char-key",
        "over-1-MiB",
        "ehk-abc",
        "ehk-negative",
        "ehk-2^128",
        "ehk-empty",
    ],
)
def test_put_rejects_records_kinesis_could_never_take(
    data: bytes, key: str, explicit: str | None
) -> None:
    kinesis = FakePutKinesis(shards=1)
    with start(kinesis) as producer:
        with pytest.raises(RecordRejected):
            producer.put(data, key, explicit_hash_key=explicit)
        assert producer.flush(5)
    assert kinesis.calls == []
    assert producer.stats.events == 0


def test_put_accepts_records_right_at_the_limits() -> None:
    kinesis = FakePutKinesis(shards=2)
    events = [
        Event(b"a", "k" * 256),
        Event(b"b" * (MAX_RECORD_BYTES - 3), "key"),  # exactly 1 MiB with its key
        Event(b"c", "k", "0"),
        Event(b"d", "k", str(MAX_HASH_KEY)),
        Event("é".encode(), "ключ"),
    ]
    _, results = produce(kinesis, events)
    assert_exactly_once(kinesis, events, results)
    assert [r.shard_id for r in results[2:4]] == ["shardId-000000000000", "shardId-000000000001"]


# -- limits and hash ranges --------------------------------------------------------------------


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_calls_stay_within_kinesis_limits(aggregate: bool) -> None:
    rng = random.Random(7)
    small = make_events(2600, rng, max_size=40, tag="small")
    large = [
        Event(b"%d" % n + rng.randbytes(rng.randint(80, 90) * 1024), "big") for n in range(140)
    ]
    events = small[:1000] + large + small[1000:]  # 12 MB
    kinesis = FakePutKinesis(shards=1)
    config = fast(
        aggregate=aggregate, linger_ms=HOLD, rate_limit=50.0, max_aggregate_bytes=96 * 1024
    )

    producer, results = produce(kinesis, events, config, backlog=True)

    assert_within_limits(kinesis, config)
    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)
    sizes = [c.size for c in kinesis.calls]
    counts = [len(c.entries) for c in kinesis.calls]
    assert max(sizes) > MAX_BYTES_PER_CALL - 100 * 1024  # full calls, but never over 5 MiB
    if not aggregate:
        assert max(counts) == MAX_RECORDS_PER_CALL
    assert_stats_match_the_stream(producer, kinesis, len(events))


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_after_a_reshard_the_stale_map_puts_no_record_outside_its_shard(aggregate: bool) -> None:
    rng = random.Random(8)
    kinesis = FakePutKinesis(shards=2)
    config = fast(aggregate=aggregate, max_aggregate_bytes=8 * 1024, shard_map_refresh_s=3600)
    batches = [make_events(400, rng, max_size=60, tag=f"b{n}-") for n in range(4)]
    results: list[PutResult] = []
    with start(kinesis, config) as producer:
        for n, batch in enumerate(batches):
            futures = put_all(producer, batch)
            assert producer.flush(10)
            results += outcomes(futures)
            if n == 0:
                kinesis.split_all()  # 4 open shards; the producer still knows 2
                listed = kinesis.list_shards_calls
            elif n == 1:
                a, b = kinesis.open_shards()[1:3]
                kinesis.merge(a.shard_id, b.shard_id)
            elif n == 2:
                kinesis.split(kinesis.open_shards()[0].shard_id, at=12345)
    events = [e for batch in batches for e in batch]

    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)
    assert kinesis.list_shards_calls > listed  # records landed elsewhere: it listed again
    for result in results[400:]:
        assert result.shard_id in kinesis.shards  # a real shard, as Kinesis answered
    second = {r.shard_id for r in results[400:800]}
    assert second <= {s.shard_id for s in kinesis.shards.values() if s.parent}
    assert_stats_match_the_stream(producer, kinesis, 1600)


# -- ordered mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
@pytest.mark.parametrize("seed", range(3))
def test_ordered_mode_lands_each_key_s_records_in_put_order_despite_failures(
    seed: int, aggregate: bool
) -> None:
    rng = random.Random(100 + seed)
    kinesis = FakePutKinesis(
        shards=3,
        entry_fault=random_entry_faults(0.35, seed),
        call_fault=random_call_faults(0.1, seed),
    )
    keys = [f"device-{n}" for n in range(10)]
    events = make_events(300, rng, keys=keys, max_size=80)
    config = fast(ordered=True, aggregate=aggregate, max_aggregate_bytes=1024)

    _, results = produce(kinesis, events, config)

    assert_exactly_once(kinesis, events, results)
    put_order: dict[str, list[bytes]] = defaultdict(list)
    for event in events:
        put_order[event.key].append(event.data)
    landed_order: dict[str, list[bytes]] = defaultdict(list)
    for read in kinesis.user_records():  # in landing order
        landed_order[read.record.partition_key].append(read.record.data)
    for key in keys:
        assert landed_order[key] == put_order[key], f"{key} landed out of order"
    assert sum(c.raised is not None or bool(c.error_codes) for c in kinesis.calls) > 5


# -- rate limits -------------------------------------------------------------------------------


def most_in_any_window(times_and_amounts: list[tuple[float, float]], window: float) -> float:
    """The largest total amount landing within ``window`` seconds of some landing."""
    times_and_amounts.sort()
    most = 0.0
    for i, (begin, _) in enumerate(times_and_amounts):
        total = sum(a for t, a in times_and_amounts[i:] if t <= begin + window)
        most = max(most, total)
    return most


def test_a_shard_gets_at_most_1000_records_a_second() -> None:
    kinesis = FakePutKinesis(shards=1)
    events = [Event(b"%d" % n, f"k{n}") for n in range(2000)]
    began = time.monotonic()

    producer, results = produce(kinesis, events)

    landings = [(c.at, float(len(c.entries) - len(c.error_codes))) for c in kinesis.calls]
    # A second's worth at once (the bucket starts full), then 1,000 a second. Tokens are
    # taken when a call is planned, so calls whose threads start late on a loaded machine
    # land closer together: the slack (300) allows for that. Without a limit all 2,000
    # land at once.
    assert most_in_any_window(landings, 0.5) <= 1000 + 1000 * 0.5 + 300
    assert max(t for t, _ in landings) - began >= 0.95  # 1,000 records after the burst
    assert_exactly_once(kinesis, events, results)
    assert producer.stats.throttled == 0


def test_a_shard_gets_at_most_1_mib_a_second() -> None:
    kinesis = FakePutKinesis(shards=1)
    events = [Event(b"%05d" % n + b"x" * (20 * 1024), f"k{n}") for n in range(100)]
    total = sum(len(e.data) + len(e.key) for e in events)  # 2 MiB
    mib = 1024 * 1024
    began = time.monotonic()

    producer, results = produce(kinesis, events)

    landings = [(c.at, float(c.size)) for c in kinesis.calls]
    # (The same slack for late threads as above; without a limit all 2 MiB land at once.)
    assert most_in_any_window(landings, 0.5) <= mib + mib * 0.5 + mib * 0.3
    assert max(t for t, _ in landings) - began >= (total - mib) / mib - 0.05
    assert_exactly_once(kinesis, events, results)
    assert producer.stats.throttled == 0


def test_throttled_entries_are_counted_and_resent() -> None:
    rng = random.Random(9)
    events = make_events(200, rng)
    unlucky = {e.key for e in events[::10]}
    kinesis = FakePutKinesis(shards=2, entry_fault=fail_keys(unlucky, 2))

    producer, results = produce(kinesis, events)

    assert_exactly_once(kinesis, events, results)
    assert producer.stats.throttled == 2 * len(unlucky)
    assert producer.stats.retried == 2 * len(unlucky)
    for event in events[::10]:
        assert kinesis.sends_of(event.data) == 3
    assert_stats_match_the_stream(producer, kinesis, 200)


# -- the buffer, flush and close ---------------------------------------------------------------


def test_a_full_buffer_raises_buffer_full_or_blocks_until_there_is_room() -> None:
    kinesis = FakePutKinesis(shards=1)
    kinesis.gate.clear()  # calls hang: records stay buffered
    producer = start(kinesis, fast(max_buffered_records=5))
    try:
        first = [producer.put(b"%d" % n, f"k{n}") for n in range(5)]
        assert producer.buffered == 5
        refused: list[BaseException] = []

        def put_without_blocking() -> None:
            try:
                producer.put(b"6", "k6", block=False)
            except BaseException as exc:
                refused.append(exc)

        attempt = threading.Thread(target=put_without_blocking, daemon=True)
        attempt.start()
        attempt.join(2)
        assert not attempt.is_alive(), "put(block=False) blocked"
        (full,) = refused
        assert isinstance(full, BufferFull)
        assert full.retry_after > 0

        blocked: list[Future[PutResult]] = []
        putter = threading.Thread(target=lambda: blocked.append(producer.put(b"6", "k6")))
        putter.start()
        putter.join(0.3)
        assert putter.is_alive(), "put did not block on a full buffer"
        assert producer.stats.events == 5

        kinesis.gate.set()
        putter.join(5)
        assert not putter.is_alive()
        assert producer.flush(5)
    finally:
        kinesis.gate.set()
        producer.close()
    events = [*(Event(b"%d" % n, f"k{n}") for n in range(5)), Event(b"6", "k6")]
    assert_exactly_once(kinesis, events, outcomes([*first, *blocked]))


def test_the_byte_limit_of_the_buffer_counts_too() -> None:
    kinesis = FakePutKinesis(shards=1)
    kinesis.gate.clear()
    producer = start(kinesis, fast(max_buffered_bytes=1000))
    try:
        producer.put(b"x" * 600, "a")
        with pytest.raises(BufferFull):
            producer.put(b"y" * 600, "b", block=False)
        producer.put(b"z" * 300, "c", block=False)  # still fits
    finally:
        kinesis.gate.set()
        producer.close()
    assert sorted(kinesis.landed_data()) == [b"x" * 600, b"z" * 300]


def test_close_sends_everything_buffered_and_then_put_raises() -> None:
    kinesis = FakePutKinesis(shards=3)
    events = make_events(100, random.Random(10))
    producer = start(kinesis, fast(linger_ms=HOLD))
    futures = put_all(producer, events)
    time.sleep(0.05)
    assert kinesis.calls == []  # lingering
    producer.close()
    assert all(f.done() for f in futures)
    assert_exactly_once(kinesis, events, outcomes(futures, 0))
    with pytest.raises(ProducerClosed):
        producer.put(b"late", "k")
    assert producer.stats.events == 100


def test_the_with_block_closes_the_producer() -> None:
    kinesis = FakePutKinesis(shards=2)
    events = make_events(30, random.Random(11))
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        futures = put_all(producer, events)
    assert all(f.done() for f in futures)
    assert_exactly_once(kinesis, events, outcomes(futures, 0))
    with pytest.raises(ProducerClosed):
        producer.put(b"late", "k")


def test_flush_sends_without_waiting_for_the_linger_and_reports_a_timeout() -> None:
    kinesis = FakePutKinesis(shards=2)
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        future = producer.put(b"now", "k")
        assert producer.flush(5)
        assert future.result(timeout=1).shard_id in kinesis.shards
        kinesis.gate.clear()
        late = producer.put(b"held", "k")
        assert producer.flush(0.2) is False
        assert not late.done()
        kinesis.gate.set()
        assert producer.flush(5)
    assert late.result(0).shard_id == future.result(0).shard_id


# -- statistics --------------------------------------------------------------------------------


def test_payload_units_are_25_kib_chunks_of_each_kinesis_record() -> None:
    kinesis = FakePutKinesis(shards=1, entry_fault=fail_keys(["k1"], 2))
    sizes = [3, PAYLOAD_UNIT_BYTES, PAYLOAD_UNIT_BYTES + 1, 3 * PAYLOAD_UNIT_BYTES]
    events = [Event(b"%d" % n + b"x" * (s - 3), f"k{n}") for n, s in enumerate(sizes)]
    assert [len(e.data) + len(e.key) for e in events] == sizes

    producer, _ = produce(kinesis, events)

    assert producer.stats.payload_units == 1 + 1 + 2 + 3  # k1's failed tries cost nothing
    assert producer.stats.bytes_sent == sum(sizes)
    assert_stats_match_the_stream(producer, kinesis, 4)


def test_stats_of_aggregated_records_count_kinesis_records_and_user_records_apart() -> None:
    kinesis = FakePutKinesis(shards=2, entry_fault=random_entry_faults(0.3, 12))
    events = make_events(500, random.Random(12), max_size=200)
    config = fast(aggregate=True, max_aggregate_bytes=PAYLOAD_UNIT_BYTES)

    producer, results = produce(kinesis, events, config, backlog=True)

    assert_exactly_once(kinesis, events, results)
    stats = producer.stats
    assert stats.sent == 500
    assert stats.kinesis_records < 100
    assert stats.payload_units == stats.kinesis_records  # each aggregate fits one unit
    assert_stats_match_the_stream(producer, kinesis, 500)


# -- threads -------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_many_threads_putting_at_once_all_get_the_right_results(aggregate: bool) -> None:
    kinesis = FakePutKinesis(shards=4, entry_fault=random_entry_faults(0.2, 13))
    per_thread = [make_events(300, random.Random(t), tag=f"t{t}-") for t in range(8)]
    futures: list[list[Future[PutResult]]] = [[] for _ in per_thread]
    barrier = threading.Barrier(len(per_thread))

    with start(kinesis, fast(aggregate=aggregate, max_aggregate_bytes=8 * 1024)) as producer:

        def run(n: int) -> None:
            barrier.wait()
            for event in per_thread[n]:
                futures[n].append(producer.put(event.data, event.key))

        threads = [threading.Thread(target=run, args=(n,)) for n in range(len(per_thread))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    events = [e for batch in per_thread for e in batch]
    results = outcomes([f for batch in futures for f in batch], 0)
    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)
    assert_stats_match_the_stream(producer, kinesis, len(events))


# -- regressions: bugs these tests found ---------------------------------------------------------


def test_a_record_too_big_to_aggregate_is_still_sent() -> None:
    """pack() once left a record bigger than max_aggregate_bytes out of the aggregate
    that followed it, while its future still got a result."""
    kinesis = FakePutKinesis(shards=1)
    events = [Event(b"B" * (200 * 1024), "big"), Event(b"small", "small"), Event(b"s2", "s2")]
    _, results = produce(kinesis, events, fast(aggregate=True, linger_ms=HOLD))
    assert_exactly_once(kinesis, events, results)
    assert_in_range(kinesis)


@pytest.fixture
def slow_future_results(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Futures of puts take a moment to be resolved, as when the sending thread is
    descheduled between settling the buffer and setting the results."""

    class SlowFuture(Future[PutResult]):
        def set_result(self, result: PutResult) -> None:
            time.sleep(0.05)
            super().set_result(result)

    monkeypatch.setattr("streams.kinesis_producer.Future", SlowFuture)
    yield


@pytest.mark.usefixtures("slow_future_results")
def test_after_flush_every_future_is_done() -> None:
    """Records once left the buffer before their futures were set: flush() could return
    True with futures still pending."""
    kinesis = FakePutKinesis(shards=1)
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        future = producer.put(b"x", "k")
        assert producer.flush(5)
        assert future.done()


def test_close_with_a_timeout_gives_every_record_its_fate_in_time() -> None:
    """close(timeout) once took 5 s with a failing call in flight, then shut the executor
    down under the running thread, which died on submit and left futures pending."""
    kinesis = FakePutKinesis(shards=1, latency_s=0.2, entry_fault=fail_keys(["k"], -1, INTERNAL))
    producer = start(kinesis)
    future = producer.put(b"x", "k")
    time.sleep(0.05)  # the first call is in flight
    began = time.monotonic()
    producer.close(timeout=0.3)
    took = time.monotonic() - began
    _, pending = wait_futures([future], 2.0)  # (also lets the producer's thread end first)
    assert took < 2.0
    assert not pending
    assert isinstance(future.exception(), ProduceFailed)


def test_records_failing_in_one_call_each_keep_their_own_reason() -> None:
    """Each record's ProduceFailed names its own last ErrorCode, once (``_retry`` must not
    pass one record's reason on to the next records of the call)."""
    codes = {"a": INTERNAL, "b": THROTTLED, "c": INTERNAL}
    kinesis = FakePutKinesis(shards=1, entry_fault=lambda _, e: codes.get(e["PartitionKey"]))
    with start(kinesis, fast(linger_ms=HOLD, record_ttl_s=0)) as producer:
        futures = {key: producer.put(key.encode(), key) for key in codes}
        assert producer.flush(5)
    # The deadline runs from the first failure, and a record always gets one retry.
    assert sum(len(c.entries) for c in kinesis.calls) == 6  # each record twice
    for key, future in futures.items():
        error = future.exception()
        assert isinstance(error, ProduceFailed)
        assert error.reason.count("not accepted after 2 attempts") == 1, error.reason
        assert error.reason.endswith(f"{codes[key]}: {ENTRY_MESSAGES[codes[key]]}"), error.reason


def test_records_failing_by_a_whole_call_error_each_get_the_call_s_reason_once() -> None:
    kinesis = FakePutKinesis(shards=1, call_fault=lambda *_: server_error())
    with start(kinesis, fast(linger_ms=HOLD, record_ttl_s=0)) as producer:
        futures = [producer.put(key.encode(), key) for key in "abc"]
        assert producer.flush(5)
    for future in futures:
        error = future.exception()
        assert isinstance(error, ProduceFailed)
        assert error.reason == "not accepted after 2 attempts in 0.0s: InternalFailure"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate_limit": 0}, "rate_limit"),
        ({"max_aggregate_bytes": 2 * 1024 * 1024}, "max_aggregate_bytes"),
        ({"linger_ms": -1}, "linger_ms"),
        ({"max_calls_in_flight": 0}, "max_calls_in_flight"),
    ],
)
def test_impossible_settings_are_refused_when_configured(
    change: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ProducerConfig(**change)  # type: ignore[arg-type]


# -- callers who cancel, call back, or hold their own locks ----------------------------------


def test_a_future_cannot_be_cancelled_out_from_under_the_producer() -> None:
    """``asyncio.wait_for`` cancels what it waits on when it times out; a cancelled future
    once jammed its shard for good. Futures are running from ``put`` on: cancel() refuses."""
    kinesis = FakePutKinesis(shards=1)
    with start(kinesis, fast(linger_ms=HOLD)) as producer:
        first = producer.put(b"1", "k1")
        assert not first.cancel()
        assert producer.flush(5)
        second = producer.put(b"2", "k2")
        assert producer.flush(5)
    assert first.result().shard_id and second.result().shard_id


def test_a_done_callback_may_put_the_next_event_even_with_a_full_buffer() -> None:
    kinesis = FakePutKinesis(shards=1)
    followers: list[Future[PutResult]] = []
    with start(kinesis, fast(max_buffered_records=3)) as producer:

        def follow(done: Future[PutResult]) -> None:
            if len(followers) < 20:
                followers.append(producer.put(b"next", f"n{len(followers)}"))

        for n in range(3):
            producer.put(b"%d" % n, f"k{n}").add_done_callback(follow)
        deadline = time.monotonic() + 5
        while len(followers) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert producer.flush(5)
    assert len(followers) == 3
    assert all(f.done() and f.exception() is None for f in followers)


def test_callbacks_of_records_failed_on_close_run_without_the_producer_s_lock() -> None:
    """A callback that takes the caller's lock, while the caller holds it and puts, must
    not deadlock: futures are resolved after the producer lets go of its own lock."""
    kinesis = FakePutKinesis(shards=1, entry_fault=lambda *_: INTERNAL)
    app_lock = threading.Lock()
    producer = start(kinesis, fast(linger_ms=HOLD, record_ttl_s=60))
    future = producer.put(b"x", "k")
    future.add_done_callback(lambda _: app_lock.acquire() and app_lock.release())
    closer = threading.Thread(target=producer.close, kwargs={"timeout": 0.2})
    with app_lock:
        closer.start()
        time.sleep(0.5)
        with pytest.raises(ProducerClosed):
            producer.put(b"y", "k")  # takes the producer's lock while holding app_lock
    closer.join(5)
    assert not closer.is_alive()
    assert isinstance(future.exception(), ProduceFailed)


def test_a_failing_shard_listing_is_retried_with_backoff_not_in_a_loop() -> None:
    kinesis = FakePutKinesis(shards=2)
    with start(kinesis, fast(shard_map_refresh_s=0.0)) as producer:
        calls_before = kinesis.list_shards_calls
        original = kinesis.list_shards

        def throttled(**kwargs: object) -> dict[str, object]:
            kinesis.list_shards_calls += 1
            raise throttling_error()

        kinesis.list_shards = throttled  # type: ignore[method-assign]
        sent = []
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # keep the producer's thread busy meanwhile
            sent.append(producer.put(b"x", f"k{len(sent)}"))
            time.sleep(0.005)
        attempts = kinesis.list_shards_calls - calls_before
        kinesis.list_shards = original  # type: ignore[method-assign]
        assert producer.put(b"x", "k").result(5).shard_id
    assert 1 <= attempts <= 10, attempts  # unthrottled, it tried once a loop: hundreds
    assert all(f.result().shard_id for f in sent)  # the old shard list still serves
