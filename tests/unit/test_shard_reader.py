"""Reading a shard: where it starts, how it recovers, and how it ends."""

from __future__ import annotations

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from processors.windowing.records import Position
from streams.aws_errors import ResourceMissing
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
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a", b"b", b"c")
    result = ShardReader(kinesis, "stream", "s0", Position(2)).read()  # type: ignore[arg-type]
    assert [r.data for r in result.records] == [b"c"]
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"


def test_inside_an_aggregate_it_reads_the_record_again() -> None:
    kinesis = FakeKinesis()
    kinesis.put("s0", b"a", b"b")
    reader = ShardReader(kinesis, "stream", "s0", Position(1, sub=3))  # type: ignore[arg-type]
    assert [r.data for r in reader.read().records] == [b"a", b"b"]
    assert kinesis.iterator_requests[0]["ShardIteratorType"] == "AT_SEQUENCE_NUMBER"


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
