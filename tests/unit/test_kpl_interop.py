"""Our KPL aggregates against AWS's own Python library, aws_kinesis_agg (which encodes and
decodes with protobuf): each side reads what the other writes, exactly.

aws_kinesis_agg is a dev dependency; without it these tests are skipped (and say so).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kpl import AggregateBuilder, UserRecord, decode_aggregate

aggregator = pytest.importorskip("aws_kinesis_agg.aggregator")
deaggregator = pytest.importorskip("aws_kinesis_agg.deaggregator")

# aws_kinesis_agg stores an explicit hash key only when it is non-empty, and compares
# keys for deduplication as given: give it non-empty hash keys and bytes keys.
keys = st.text(max_size=30)
hash_keys = st.none() | st.integers(0, (1 << 128) - 1).map(str)
user_records = st.builds(UserRecord, keys, hash_keys, st.binary(max_size=200))
shared = st.builds(
    UserRecord,
    st.sampled_from(["a", "ключ", "🔑"]),
    st.none() | st.just("42"),
    st.binary(max_size=9),
)
record_lists = st.lists(user_records | shared, min_size=1, max_size=40)


def boto3_record(data: bytes) -> dict[str, Any]:
    return {
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "PartitionKey": "outer",
        "ApproximateArrivalTimestamp": datetime(2026, 11, 27, tzinfo=UTC),
        "Data": data,
    }


def theirs_decode(data: bytes) -> list[UserRecord]:
    """aws_kinesis_agg's deaggregator on a GetRecords (boto3) record holding ``data``."""
    out = deaggregator.iter_deaggregate_records([boto3_record(data)], data_format="Boto3")
    records = []
    for index, item in enumerate(out):
        kinesis = item["kinesis"]
        assert kinesis["aggregated"] and kinesis["subSequenceNumber"] == index
        # It hands data back base64-encoded (the Lambda event shape).
        records.append(
            UserRecord(
                kinesis["partitionKey"],
                kinesis["explicitHashKey"],
                base64.b64decode(kinesis["data"]),
            )
        )
    return records


def theirs_encode(records: list[UserRecord]) -> tuple[str, bytes]:
    agg = aggregator.RecordAggregator()
    for record in records:
        pk = record.partition_key.encode()
        ehk = None if record.explicit_hash_key is None else record.explicit_hash_key.encode()
        assert agg.add_user_record(pk, record.data, ehk) is None  # everything fits
    partition_key, _, data = agg.clear_and_get().get_contents()
    return partition_key.decode(), data


@given(record_lists)
@settings(max_examples=200)
def test_aws_kinesis_agg_reads_our_aggregates_exactly(records: list[UserRecord]) -> None:
    builder = AggregateBuilder(1 << 20)
    for record in records:
        assert builder.add(record)
    decoded = theirs_decode(builder.build())
    # Their reader does not check whether a record has an explicit hash key index (it
    # reads index 0 of the table when the field is absent), so compare that key only for
    # records that have one; test_kpl.py checks absent keys with another reader.
    assert [(r.partition_key, r.data) for r in decoded] == [
        (r.partition_key, r.data) for r in records
    ]
    for theirs, ours in zip(decoded, records, strict=True):
        if ours.explicit_hash_key is not None:
            assert theirs.explicit_hash_key == ours.explicit_hash_key


@given(record_lists)
@settings(max_examples=200)
def test_we_read_aws_kinesis_agg_aggregates_exactly(records: list[UserRecord]) -> None:
    partition_key, data = theirs_encode(records)
    assert decode_aggregate(data) == records
    assert partition_key == records[0].partition_key


@given(record_lists)
@settings(max_examples=200)
def test_both_encoders_write_the_same_bytes(records: list[UserRecord]) -> None:
    """Same tables, same order, same protobuf: byte for byte (both deduplicate keys)."""
    builder = AggregateBuilder(1 << 20)
    for record in records:
        assert builder.add(record)
    assert theirs_encode(records)[1] == builder.build()


def test_their_single_record_aggregate_is_the_documented_one() -> None:
    _, data = theirs_encode([UserRecord("partition_key", None, b"data")])
    builder = AggregateBuilder(1 << 20)
    assert builder.add(UserRecord("partition_key", None, b"data"))
    assert data == builder.build()


def test_both_read_a_wrong_md5_as_a_plain_record() -> None:
    builder = AggregateBuilder(1 << 20)
    assert builder.add(UserRecord("k", None, b"v"))
    data = bytearray(builder.build())
    data[-1] ^= 1
    [theirs] = deaggregator.iter_deaggregate_records([boto3_record(bytes(data))], "Boto3")
    assert "aggregated" not in theirs["kinesis"] and theirs["kinesis"]["data"] == data
    assert decode_aggregate(bytes(data)) is None
