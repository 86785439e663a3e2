"""Reading a shard: where it starts, how it recovers, and how it ends."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from processors.windowing.records import Position
from streams.aws_errors import ResourceMissing
from streams.kpl import MAGIC, AggregateBuilder, UserRecord
from streams.shard_reader import ShardReader
from tests.unit.fake_kinesis import FakeKinesis


def test_starts_at_the_oldest_record_without_a_checkpoint() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a", b"b")
    result = ShardReader(kinesis, "stream", "s0", None).read()  # type: ignore[arg-type]
    assert [r.data for r in result.records] == [b"a", b"b"]
    assert [r.position for r in result.records] == [Position(1), Position(2)]
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "TRIM_HORIZON"
    assert result.records[0].arrival_ms == 1_795_737_600_000


def test_starts_after_the_checkpoint() -> None:
    """It reads the checkpoint's Kinesis record again (it may be an aggregate with user
    records after the checkpoint) and delivers only what comes after."""
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a", b"b", b"c")
    result = ShardReader(kinesis, "stream", "s0", Position(2)).read()  # type: ignore[arg-type]
    assert [r.data for r in result.records] == [b"c"]
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"
    assert kinesis.iterator_requests[0]["StartingSequenceNumber"] == "2"


def test_an_expired_iterator_is_renewed_after_the_last_record_read() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a", b"b")
    reader = ShardReader(kinesis, "stream", "s0", None, limit=1)  # type: ignore[arg-type]
    assert [r.data for r in reader.read().records] == [b"a"]
    kinesis.faults.append("ExpiredIteratorException")
    assert reader.read().records == []
    assert [r.data for r in reader.read().records] == [b"b"]
    assert kinesis.iterator_requests[-1] == {
        "StreamName": "stream",
        "ShardId": "s0",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "StartingSequenceNumber": "1",
    }


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "InternalFailure", "KMSThrottlingException"]
)
def test_throttling_and_server_errors_ask_for_backoff_and_lose_nothing(code: str) -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a")
    reader = ShardReader(kinesis, "stream", "s0", None)  # type: ignore[arg-type]
    kinesis.faults.append(code)
    assert reader.read().throttled
    assert [r.data for r in reader.read().records] == [b"a"]


def test_other_errors_are_raised() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a")
    reader = ShardReader(kinesis, "stream", "s0", None)  # type: ignore[arg-type]
    kinesis.faults.append("AccessDeniedException")
    with pytest.raises(Exception, match="AccessDenied"):
        reader.read()


def test_a_missing_shard_is_a_clear_error() -> None:
    reader = ShardReader(FakeKinesis(), "stream", "nope", None)  # type: ignore[arg-type]
    with pytest.raises(ResourceMissing, match="shard nope"):
        reader.read()


def test_a_closed_shard_ends_after_its_last_record() -> None:
    kinesis = FakeKinesis(closed={"s0"})
    kinesis.put("s0", b"a")
    reader = ShardReader(kinesis, "stream", "s0", None)  # type: ignore[arg-type]
    result = reader.read()
    assert result.ended and [r.data for r in result.records] == [b"a"]
    assert reader.read().ended and kinesis.reads == 1


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="http://kinesis"),
        EndpointConnectionError(endpoint_url="http://kinesis"),
        ConnectTimeoutError(endpoint_url="http://kinesis"),
    ],
)
def test_network_errors_ask_for_backoff(error: Exception) -> None:
    kinesis = FakeKinesis(faults=[error])
    kinesis.put("s0", b"a")
    reader = ShardReader(kinesis, "stream", "s0", None)  # type: ignore[arg-type]
    assert reader.read().throttled
    assert [r.data for r in reader.read().records] == [b"a"]


# -- KPL aggregates -------------------------------------------------------------------


def aggregate(*records: tuple[str, bytes]) -> bytes:
    builder = AggregateBuilder(1 << 20)
    for partition_key, data in records:
        assert builder.add(UserRecord(partition_key, None, data))
    return builder.build()


def shard_with_an_aggregate(**kwargs: object) -> FakeKinesis:
    """Sequence 1 plain, 2 an aggregate of x, y, z, 3 plain."""
    kinesis = FakeKinesis(**kwargs)  # type: ignore[arg-type]
    kinesis.put("s0", b"a", aggregate(("u0", b"x"), ("u1", b"y"), ("u0", b"z")), b"b")
    return kinesis


def test_an_aggregate_becomes_one_record_per_user_record() -> None:
    kinesis = shard_with_an_aggregate()
    result = ShardReader(kinesis, "stream", "s0", None).read()  # type: ignore[arg-type]
    assert [(r.position, r.partition_key, r.data) for r in result.records] == [
        (Position(1), "pk", b"a"),
        (Position(2, 0), "u0", b"x"),
        (Position(2, 1), "u1", b"y"),
        (Position(2, 2), "u0", b"z"),
        (Position(3), "pk", b"b"),
    ]
    assert {r.arrival_ms for r in result.records} == {1_795_737_600_000}
    assert {r.shard_id for r in result.records} == {"s0"}


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (Position(1), [b"x", b"y", b"z", b"b"]),
        # Sub 0 is the aggregate's first user record: its others must still come.
        (Position(2, 0), [b"y", b"z", b"b"]),
        (Position(2, 1), [b"z", b"b"]),
        (Position(2, 2), [b"b"]),
        (Position(3), []),
    ],
)
def test_a_checkpoint_anywhere_loses_nothing_and_repeats_nothing(
    checkpoint: Position, expected: list[bytes]
) -> None:
    kinesis = shard_with_an_aggregate()
    reader = ShardReader(kinesis, "stream", "s0", checkpoint)  # type: ignore[arg-type]
    assert [r.data for r in reader.read().records] == expected
    assert kinesis.iterator_requests == [
        {
            "StreamName": "stream",
            "ShardId": "s0",
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": checkpoint.sequence_number,
        }
    ]


def test_the_checkpoint_record_alone_in_a_read_yields_nothing_then_the_rest() -> None:
    kinesis = shard_with_an_aggregate()
    reader = ShardReader(kinesis, "stream", "s0", Position(2, 2), limit=1)  # type: ignore[arg-type]
    assert reader.read().records == []
    assert [r.data for r in reader.read().records] == [b"b"]


def test_an_iterator_expiring_before_the_checkpoint_record_is_renewed_at_it() -> None:
    kinesis = shard_with_an_aggregate(faults=["ExpiredIteratorException"])
    reader = ShardReader(kinesis, "stream", "s0", Position(2, 0))  # type: ignore[arg-type]
    assert reader.read().renewed
    assert [r.data for r in reader.read().records] == [b"y", b"z", b"b"]
    assert [r["ShardIteratorType"] for r in kinesis.iterator_requests] == [
        "AT_SEQUENCE_NUMBER",
        "AT_SEQUENCE_NUMBER",
    ]


def test_an_iterator_expiring_after_an_aggregate_goes_on_after_it() -> None:
    """An aggregate is always delivered whole, so a renewed iterator starts after it."""
    kinesis = shard_with_an_aggregate()
    reader = ShardReader(kinesis, "stream", "s0", Position(1), limit=1)  # type: ignore[arg-type]
    assert [r.data for r in reader.read().records] == []  # the checkpoint record
    assert [r.data for r in reader.read().records] == [b"x", b"y", b"z"]
    kinesis.faults.append("ExpiredIteratorException")
    assert reader.read().renewed
    assert [r.data for r in reader.read().records] == [b"b"]
    assert kinesis.iterator_requests[-1]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert kinesis.iterator_requests[-1]["StartingSequenceNumber"] == "2"


def test_a_malformed_aggregate_passes_on_as_one_plain_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Magic and MD5 right, protobuf broken: the shard must not stop. The record goes on
    whole (sub 0) and the pipelines dead-letter it as invalid."""
    body = b"\x0a\x01k\x1a\x02\x08\x05"  # an index outside the table, and no data
    broken = MAGIC + body + hashlib.md5(body).digest()
    kinesis = FakeKinesis()
    kinesis.put("s0", broken, b"a")
    result = ShardReader(kinesis, "stream", "s0", None).read()  # type: ignore[arg-type]
    assert [(r.position, r.partition_key, r.data) for r in result.records] == [
        (Position(1), "pk", broken),
        (Position(2), "pk", b"a"),
    ]
    assert "malformed KPL aggregate" in caplog.text


def test_the_magic_with_a_wrong_md5_is_a_plain_record() -> None:
    data = bytearray(aggregate(("u", b"x"), ("u", b"y")))
    data[-1] ^= 0xFF
    kinesis = FakeKinesis()
    kinesis.put("s0", bytes(data))
    [record] = ShardReader(kinesis, "stream", "s0", None).read().records  # type: ignore[arg-type]
    assert (record.position, record.partition_key, record.data) == (Position(1), "pk", data)
