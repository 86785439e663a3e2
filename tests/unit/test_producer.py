"""BatchProducer against a hand-written fake Kinesis client: no network, no emulator."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.aws_errors import ResourceMissing
from streams.producer import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    PAYLOAD_UNIT_BYTES,
    BatchProducer,
    OutgoingRecord,
    ProduceSummary,
    batches,
    check_record,
)

STREAM = "clickstream"

# (call number from 0, the entry as sent) -> (ErrorCode, ErrorMessage) to fail it, or None.
EntryFailure = Callable[[int, dict[str, Any]], "tuple[str, str] | None"]


def client_error(code: str, status: int = 400, message: str = "injected") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutRecords",
    )


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class FakeKinesis:
    """Records every PutRecords call; fails entries or whole calls on demand.

    ``fail_entry`` fails chosen entries (by partition key, by call number, ...).
    ``raise_on`` maps a call number to the ClientError that call raises.
    ``failed_record_count`` replaces the true FailedRecordCount (to mimic LocalStack's
    error injection, which reports a wrong count).
    """

    def __init__(
        self,
        fail_entry: EntryFailure | None = None,
        raise_on: dict[int, ClientError] | None = None,
        failed_record_count: int | None = None,
        shards: int = 2,
        time: FakeTime | None = None,
    ) -> None:
        self.fail_entry = fail_entry
        self.raise_on = raise_on or {}
        self.failed_record_count = failed_record_count
        self.shards = shards
        self.time = time
        self.calls: list[list[dict[str, Any]]] = []
        self.call_times: list[float] = []
        self.stream_names: list[str] = []
        self.accepted: list[bytes] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        call = len(self.calls)
        self.calls.append(list(Records))
        self.stream_names.append(StreamName)
        if self.time is not None:
            self.call_times.append(self.time.now)
        if call in self.raise_on:
            raise self.raise_on[call]
        results: list[dict[str, Any]] = []
        failed = 0
        for entry in Records:
            failure = self.fail_entry(call, entry) if self.fail_entry else None
            if failure is not None:
                failed += 1
                results.append({"ErrorCode": failure[0], "ErrorMessage": failure[1]})
            else:
                self.accepted.append(entry["Data"])
                shard = f"shardId-{len(self.accepted) % self.shards:012d}"
                results.append({"ShardId": shard, "SequenceNumber": str(len(self.accepted))})
        count = failed if self.failed_record_count is None else self.failed_record_count
        return {"FailedRecordCount": count, "Records": results}

    def first_attempt_order(self) -> list[bytes]:
        seen: dict[bytes, None] = {}
        for call in self.calls:
            for entry in call:
                seen.setdefault(entry["Data"], None)
        return list(seen)

    def sends_of(self, data: bytes) -> int:
        return sum(entry["Data"] == data for call in self.calls for entry in call)


def make_records(
    count: int, size: int = 0, key: Callable[[int], str] = str
) -> list[OutgoingRecord]:
    records = []
    for i in range(1, count + 1):
        data = f'{{"event_id": "e{i}"}}'.encode()
        if size:
            data = data.ljust(size, b" ")
        records.append(OutgoingRecord(data, key(i), i))
    return records


def producer(
    kinesis: FakeKinesis, time: FakeTime | None = None, max_attempts: int = 12
) -> BatchProducer:
    time = time or FakeTime()
    return BatchProducer(
        kinesis,  # type: ignore[arg-type]
        STREAM,
        max_attempts=max_attempts,
        sleep=time.sleep,
        clock=time.clock,
    )


def assert_exactly_once(kinesis: FakeKinesis, records: list[OutgoingRecord]) -> None:
    counts = Counter(kinesis.accepted)
    assert counts == Counter(r.data for r in records)
    assert all(n == 1 for n in counts.values())


def throttled(message: str = "Rate exceeded for shard") -> tuple[str, str]:
    return ("ProvisionedThroughputExceededException", message)


# --- the happy path ----------------------------------------------------------------------


def test_sends_every_record_once_in_order_with_the_stream_and_keys() -> None:
    kinesis = FakeKinesis()
    records = make_records(7, key=lambda i: f"key-{i}")

    summary = producer(kinesis).send(records)

    assert kinesis.stream_names == [STREAM]
    assert [e["Data"] for e in kinesis.calls[0]] == [r.data for r in records]
    assert [e["PartitionKey"] for e in kinesis.calls[0]] == [f"key-{i}" for i in range(1, 8)]
    assert_exactly_once(kinesis, records)
    assert summary.records == 7
    assert summary.sent == 7
    assert summary.put_calls == 1
    assert summary.retries == 0
    assert summary.failed == []
    assert summary.bytes_sent == sum(r.size for r in records)
    assert sum(summary.shards.values()) == 7
    assert set(summary.shards) == {"shardId-000000000000", "shardId-000000000001"}


def test_empty_input_makes_no_calls() -> None:
    kinesis = FakeKinesis()
    summary = producer(kinesis).send([])
    assert kinesis.calls == []
    assert summary == ProduceSummary()


def test_accepts_a_generator_and_reads_it_once() -> None:
    kinesis = FakeKinesis()
    records = make_records(1200)
    summary = producer(kinesis).send(r for r in records)
    assert summary.records == summary.sent == 1200
    assert_exactly_once(kinesis, records)


def test_on_progress_is_called_after_each_batch() -> None:
    kinesis = FakeKinesis()
    seen: list[int] = []
    producer(kinesis).send(make_records(1001), on_progress=lambda s: seen.append(s.sent))
    assert seen == [500, 1000, 1001]


# --- batch limits ------------------------------------------------------------------------


def test_at_most_500_records_per_call() -> None:
    kinesis = FakeKinesis()
    records = make_records(1201)

    producer(kinesis).send(records)

    assert [len(call) for call in kinesis.calls] == [500, 500, 201]
    assert kinesis.first_attempt_order() == [r.data for r in records]


def call_bytes(call: list[dict[str, Any]]) -> int:
    return sum(len(e["Data"]) + len(e["PartitionKey"].encode()) for e in call)


def test_at_most_5_mib_per_call_counting_partition_keys() -> None:
    kinesis = FakeKinesis()
    # Each record is just under 1 MiB with its key: five fit in a call, six do not.
    key = "k" * 200
    records = [
        OutgoingRecord(bytes([i]) * (MAX_RECORD_BYTES - 200 - 10), key, i) for i in range(1, 13)
    ]

    summary = producer(kinesis).send(records)

    assert [len(call) for call in kinesis.calls] == [5, 5, 2]
    assert all(call_bytes(call) <= MAX_BYTES_PER_CALL for call in kinesis.calls)
    assert summary.sent == 12
    assert kinesis.first_attempt_order() == [r.data for r in records]


def test_partition_keys_count_towards_the_call_size() -> None:
    # Five records of exactly 1 MiB including the key fill a call exactly.
    key = "p" * 256
    exact = [OutgoingRecord(bytes([i]) * (MAX_RECORD_BYTES - 256), key, i) for i in range(5)]
    kinesis = FakeKinesis()
    producer(kinesis).send([*exact, OutgoingRecord(b"x", "k", 99)])
    assert [len(call) for call in kinesis.calls] == [5, 1]
    assert call_bytes(kinesis.calls[0]) == MAX_BYTES_PER_CALL


def test_batches_helper_respects_both_limits() -> None:
    small = [OutgoingRecord(b"a", "k", i) for i in range(3)]
    assert [len(b) for b in batches(small, max_records=2)] == [2, 1]
    assert list(batches([])) == []
    big = [OutgoingRecord(b"x" * (MAX_BYTES_PER_CALL // 2), "k", i) for i in range(3)]
    assert [len(b) for b in batches(big)] == [1, 1, 1]


# --- records rejected before sending -----------------------------------------------------


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (OutgoingRecord(b"x", "", 1), "partition key"),
        (OutgoingRecord(b"x", "k" * 257, 1), "partition key"),
        (OutgoingRecord(b"x" * MAX_RECORD_BYTES, "k", 1), "limit"),
        (OutgoingRecord(b"x" * (MAX_RECORD_BYTES - 3), "key1", 1), "limit"),
    ],
    ids=["empty-key", "key-257-chars", "data-1MiB-plus-key", "1MiB-plus-1-with-key"],
)
def test_impossible_records_are_rejected_with_a_reason(record: OutgoingRecord, reason: str) -> None:
    assert reason in (check_record(record) or "")


@pytest.mark.parametrize(
    "record",
    [
        OutgoingRecord(b"x", "k", 1),
        OutgoingRecord(b"x", "k" * 256, 1),
        OutgoingRecord(b"x", "é" * 256, 1),  # 256 characters, 512 bytes
        OutgoingRecord(b"x" * (MAX_RECORD_BYTES - 1), "k", 1),
        OutgoingRecord(b"", "k", 1),
    ],
    ids=["tiny", "key-256-chars", "key-256-non-ascii", "exactly-1MiB", "empty-data"],
)
def test_records_within_the_limits_pass_the_check(record: OutgoingRecord) -> None:
    assert check_record(record) is None


def test_rejected_records_are_never_sent_and_the_rest_are() -> None:
    kinesis = FakeKinesis()
    good = make_records(4)
    bad_key = OutgoingRecord(b'{"event_id": "bad-key"}', "", 10)
    too_big = OutgoingRecord(b"x" * (MAX_RECORD_BYTES + 1), "k", 11)
    records = [good[0], bad_key, good[1], too_big, good[2], good[3]]

    summary = producer(kinesis).send(records)

    assert_exactly_once(kinesis, good)
    assert kinesis.first_attempt_order() == [r.data for r in good]
    assert summary.records == 6
    assert summary.sent == 4
    assert [f.ref for f in summary.failed] == [10, 11]
    assert "partition key must be 1 to 256 characters, got 0" in summary.failed[0].reason
    assert str(MAX_RECORD_BYTES) in summary.failed[1].reason


# --- partial failures: resend only the entries with an ErrorCode -------------------------


def test_resends_only_failed_entries_in_order() -> None:
    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return throttled() if call == 0 and int(entry["PartitionKey"]) % 3 == 0 else None

    kinesis = FakeKinesis(fail)
    time = FakeTime()
    records = make_records(10)

    summary = producer(kinesis, time).send(records)

    assert [e["PartitionKey"] for e in kinesis.calls[1]] == ["3", "6", "9"]
    assert len(kinesis.calls) == 2
    assert_exactly_once(kinesis, records)
    assert kinesis.first_attempt_order() == [r.data for r in records]
    assert summary.sent == 10
    assert summary.retries == 3
    assert summary.put_calls == 2
    assert summary.failed == []
    assert len(time.sleeps) == 1


@pytest.mark.parametrize("reported", [1, 0], ids=["count-too-low", "count-zero"])
def test_whole_batch_errors_with_a_wrong_failed_record_count(reported: int) -> None:
    """LocalStack's error injection fails every entry but reports FailedRecordCount 1."""

    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return throttled("injected") if call < 2 else None

    kinesis = FakeKinesis(fail, failed_record_count=reported)
    records = make_records(25)

    summary = producer(kinesis).send(records)

    assert [len(c) for c in kinesis.calls] == [25, 25, 25]
    assert_exactly_once(kinesis, records)
    assert [e["Data"] for e in kinesis.calls[2]] == [r.data for r in records]
    assert summary.sent == 25
    assert summary.failed == []


def test_success_is_read_from_entries_even_when_failed_record_count_says_failure() -> None:
    kinesis = FakeKinesis(failed_record_count=3)
    records = make_records(5)
    summary = producer(kinesis).send(records)
    assert len(kinesis.calls) == 1
    assert summary.sent == 5
    assert_exactly_once(kinesis, records)


def test_a_record_that_keeps_failing_ends_in_failed_with_its_last_error() -> None:
    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        if entry["PartitionKey"] != "poison":
            return None
        if call == 0:
            return ("InternalFailure", "first error")
        return throttled(f"still throttled on call {call}")

    kinesis = FakeKinesis(fail)
    time = FakeTime()
    records = make_records(4)
    poison = OutgoingRecord(b'{"event_id": "poison"}', "poison", 3)
    records.insert(2, poison)

    summary = producer(kinesis, time, max_attempts=4).send(records)

    assert len(kinesis.calls) == 4
    assert kinesis.sends_of(poison.data) == 4
    others = [r for r in records if r is not poison]
    assert_exactly_once(kinesis, others)
    assert summary.sent == 4
    assert [f.ref for f in summary.failed] == [3]
    reason = summary.failed[0].reason
    assert "4 attempts" in reason
    assert "ProvisionedThroughputExceededException: still throttled on call 3" in reason
    assert "first error" not in reason
    assert summary.retries == 3
    assert len(time.sleeps) == 3


def test_failed_reasons_belong_to_their_own_record_with_default_refs() -> None:
    """Records made without a ``ref`` (default 0) must not share each other's errors.

    ``_send_batch`` keys ``last_error`` by ``record.ref``, so two failing records with the
    same ref report the same (the later one's) error.
    """

    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        if entry["PartitionKey"] == "a":
            return ("KMSThrottlingException", "kms is slow")
        return ("InternalFailure", "server broke")

    kinesis = FakeKinesis(fail)
    records = [OutgoingRecord(b"A", "a"), OutgoingRecord(b"B", "b")]

    summary = producer(kinesis, max_attempts=2).send(records)

    reasons = [f.reason for f in summary.failed]
    assert len(reasons) == 2
    assert any("KMSThrottlingException" in r for r in reasons), reasons
    assert any("InternalFailure" in r for r in reasons), reasons


def test_flaky_records_succeed_on_a_later_attempt_without_duplicates() -> None:
    attempts: Counter[str] = Counter()

    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        key = entry["PartitionKey"]
        attempts[key] += 1
        limit = int(key) % 4  # key n fails its first n % 4 attempts
        return throttled() if attempts[key] <= limit else None

    kinesis = FakeKinesis(fail)
    records = make_records(40)

    summary = producer(kinesis).send(records)

    assert_exactly_once(kinesis, records)
    assert kinesis.first_attempt_order() == [r.data for r in records]
    assert summary.sent == 40
    assert summary.failed == []
    assert summary.retries == sum(int(r.partition_key) % 4 for r in records)
    assert len(kinesis.calls) == 4


def test_backoff_sleeps_between_attempts_within_the_jitter_bounds() -> None:
    kinesis = FakeKinesis(lambda call, entry: throttled())
    time = FakeTime()

    producer(kinesis, time, max_attempts=8).send(make_records(2))

    assert len(kinesis.calls) == 8
    assert len(time.sleeps) == 7
    for attempt, slept in enumerate(time.sleeps, start=1):
        assert 0 <= slept <= min(5.0, 0.1 * 2**attempt)


# --- whole-call errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
    ],
)
def test_retryable_whole_call_errors_are_retried(code: str, status: int) -> None:
    kinesis = FakeKinesis(raise_on={0: client_error(code, status), 1: client_error(code, status)})
    time = FakeTime()
    records = make_records(30)

    summary = producer(kinesis, time).send(records)

    assert len(kinesis.calls) == 3
    assert all(len(c) == 30 for c in kinesis.calls)
    assert_exactly_once(kinesis, records)
    assert summary.sent == 30
    assert summary.put_calls == 3
    assert summary.retries == 60
    assert summary.failed == []
    assert len(time.sleeps) == 2


def test_whole_call_error_after_partial_success_resends_only_the_failed_entries() -> None:
    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return throttled() if call == 0 and entry["PartitionKey"] in {"2", "5"} else None

    kinesis = FakeKinesis(
        fail, raise_on={1: client_error("ProvisionedThroughputExceededException")}
    )
    records = make_records(6)

    summary = producer(kinesis).send(records)

    assert [[e["PartitionKey"] for e in c] for c in kinesis.calls[1:]] == [["2", "5"], ["2", "5"]]
    assert_exactly_once(kinesis, records)
    assert summary.sent == 6


def test_whole_call_errors_that_never_stop_fail_the_batch_but_not_the_next_one() -> None:
    errors = {n: client_error("ProvisionedThroughputExceededException") for n in range(3)}
    kinesis = FakeKinesis(raise_on=errors)
    records = make_records(501)

    summary = producer(kinesis, max_attempts=3).send(records)

    assert summary.sent == 1
    assert kinesis.accepted == [records[-1].data]
    assert len(summary.failed) == 500
    assert [f.ref for f in summary.failed] == list(range(1, 501))
    assert all("ProvisionedThroughputExceededException" in f.reason for f in summary.failed)


def test_resource_not_found_raises_resource_missing() -> None:
    kinesis = FakeKinesis(raise_on={0: client_error("ResourceNotFoundException")})

    with pytest.raises(ResourceMissing, match=r"clickstream.*shardflow up"):
        producer(kinesis).send(make_records(3))

    assert len(kinesis.calls) == 1


def test_non_retryable_client_errors_are_not_retried() -> None:
    kinesis = FakeKinesis(raise_on={0: client_error("AccessDeniedException", 400)})
    time = FakeTime()

    with pytest.raises(ClientError):
        producer(kinesis, time).send(make_records(3))

    assert len(kinesis.calls) == 1
    assert time.sleeps == []


# --- pacing --------------------------------------------------------------------------------


def test_rate_paces_calls_with_the_injected_sleep() -> None:
    time = FakeTime()
    kinesis = FakeKinesis(time=time)
    start = time.now
    records = make_records(50)

    summary = producer(kinesis, time).send(records, rate=100.0)

    # 100 records/s: calls of 10 records, one every 0.1 s.
    assert [len(c) for c in kinesis.calls] == [10] * 5
    for n, at in enumerate(kinesis.call_times):
        assert at - start >= n * 0.1 - 1e-9
    assert sum(time.sleeps) == pytest.approx(0.4)
    assert summary.elapsed == pytest.approx(0.4)
    assert_exactly_once(kinesis, records)


def test_slow_rate_sends_one_record_per_call() -> None:
    time = FakeTime()
    kinesis = FakeKinesis(time=time)
    producer(kinesis, time).send(make_records(3), rate=2.0)
    assert [len(c) for c in kinesis.calls] == [1, 1, 1]
    assert time.sleeps == pytest.approx([0.5, 0.5])


def test_without_rate_nothing_sleeps() -> None:
    time = FakeTime()
    producer(FakeKinesis(), time).send(make_records(1200))
    assert time.sleeps == []


# --- summary -------------------------------------------------------------------------------


def test_payload_units_are_25_kib_chunks_per_record() -> None:
    key = "k"
    sizes = [1, PAYLOAD_UNIT_BYTES, PAYLOAD_UNIT_BYTES + 1, 3 * PAYLOAD_UNIT_BYTES]
    records = [OutgoingRecord(b"x" * (s - len(key)), key, i) for i, s in enumerate(sizes)]

    summary = producer(FakeKinesis()).send(records)

    assert summary.payload_units == 1 + 1 + 2 + 3
    assert summary.bytes_sent == sum(sizes)


def test_payload_units_count_accepted_records_once_despite_retries() -> None:
    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return throttled() if call < 3 else None

    records = make_records(4, size=30 * 1024)
    summary = producer(FakeKinesis(fail)).send(records)
    assert summary.payload_units == 4 * 2
    assert summary.bytes_sent == sum(r.size for r in records)


def test_summary_lines_report_the_figures() -> None:
    summary = ProduceSummary(
        records=3,
        sent=2,
        put_calls=4,
        retries=5,
        bytes_sent=100,
        payload_units=2,
        elapsed=2.0,
        shards={"shardId-1": 1, "shardId-0": 1},
    )
    text = "\n".join(summary.lines())
    assert "records read      3" in text
    assert "records sent      2" in text
    assert "PutRecords calls  4" in text
    assert "retried entries   5" in text
    assert "PUT payload units 2 (1,000,000 per million records)" in text
    assert "shardId-0: 1, shardId-1: 1" in text
    assert "(1 records/s)" in text


def test_summary_lines_with_nothing_sent_do_not_divide_by_zero() -> None:
    assert any("PUT payload units 0 (0 per million" in line for line in ProduceSummary().lines())


# --- property: whatever fails, nothing is lost and nothing is accepted twice --------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=0, max_value=60),
    # (call number, entry key) pairs that fail; calls that raise a retryable error.
    failures=st.sets(st.tuples(st.integers(0, 5), st.integers(1, 60)), max_size=120),
    raising=st.sets(st.integers(0, 5), max_size=3),
    rate=st.one_of(st.none(), st.floats(min_value=5, max_value=10_000)),
    wrong_count=st.one_of(st.none(), st.integers(0, 3)),
)
def test_property_nothing_lost_nothing_duplicated(
    count: int,
    failures: set[tuple[int, int]],
    raising: set[int],
    rate: float | None,
    wrong_count: int | None,
) -> None:
    def fail(call: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return throttled() if (call, int(entry["PartitionKey"])) in failures else None

    time = FakeTime()
    kinesis = FakeKinesis(
        fail,
        raise_on={n: client_error("ProvisionedThroughputExceededException") for n in raising},
        failed_record_count=wrong_count,
        time=time,
    )
    records = make_records(count)

    summary = producer(kinesis, time, max_attempts=4).send(records, rate=rate)

    counts = Counter(kinesis.accepted)
    assert all(n == 1 for n in counts.values())
    failed_refs = {f.ref for f in summary.failed}
    for record in records:
        assert (counts[record.data] == 1) != (record.ref in failed_refs)
    assert summary.sent == len(kinesis.accepted)
    assert summary.sent + len(summary.failed) == summary.records == count
    assert kinesis.first_attempt_order() == [r.data for r in records]
    sent_records = [r for r in records if counts[r.data]]
    assert summary.payload_units == sum(
        math.ceil(r.size / PAYLOAD_UNIT_BYTES) for r in sent_records
    )
    assert all(len(c) <= MAX_RECORDS_PER_CALL for c in kinesis.calls)
