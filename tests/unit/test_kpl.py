"""The KPL aggregation format: exact sizes, round trips, and hostile input.

An independent reader for the cross-checks here is a generic protobuf wire-format walker
written from the format description (aggregation-format.md); the interoperability tests
against the aws_kinesis_agg library are in test_kpl_interop.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.kpl import (
    MAGIC,
    AggregateBuilder,
    MalformedAggregate,
    UserRecord,
    decode_aggregate,
    is_aggregate,
)

BIG = 1 << 30

keys = st.text(min_size=0, max_size=40)  # any Unicode, including astral characters
hash_keys = st.none() | st.integers(0, (1 << 128) - 1).map(str) | st.text(max_size=5)
user_records = st.builds(UserRecord, keys, hash_keys, st.binary(max_size=300))
# Few distinct keys, so that tables are shared between records.
shared_keys = st.sampled_from(["a", "b", "ключ", "🔑", ""])
shared_records = st.builds(
    UserRecord, shared_keys, st.none() | st.sampled_from(["1", "2" * 39]), st.binary(max_size=20)
)
record_lists = st.lists(user_records | shared_records, min_size=1, max_size=60)


def build(records: list[UserRecord], max_bytes: int = BIG) -> AggregateBuilder:
    builder = AggregateBuilder(max_bytes)
    for record in records:
        assert builder.add(record)
    return builder


def with_md5(body: bytes) -> bytes:
    """An aggregate around ``body``, whatever it holds."""
    return MAGIC + body + hashlib.md5(body).digest()


# -- an independent reader: a generic protobuf wire-format walker ----------------------


def walk(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields.
    Written from the protobuf encoding spec, sharing no code with streams.kpl."""
    fields: list[tuple[int, Any]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value += (byte & 0x7F) * 2**shift
            shift += 7
            if byte < 128:
                return value

    while i < len(buf):
        key = varint()
        number, wire = divmod(key, 8)
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, buf[i : i + length]))
            i += length
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    assert i == len(buf)
    return fields


def independent_decode(data: bytes) -> list[UserRecord]:
    assert data[:4] == bytes([0xF3, 0x89, 0x9A, 0xC2])
    body, digest = data[4:-16], data[-16:]
    assert hashlib.md5(body).digest() == digest
    top = walk(body)
    pks = [value.decode() for number, value in top if number == 1]
    ehks = [value.decode() for number, value in top if number == 2]
    out = []
    for number, value in top:
        if number != 3:
            continue
        inner = dict(walk(value))
        ehk = ehks[inner[2]] if 2 in inner else None
        out.append(UserRecord(pks[inner[1]], ehk, inner[3]))
    # Field order as protobuf serializers write it: every key table entry before records.
    assert [n for n, _ in top] == sorted(n for n, _ in top)
    return out


# -- known answer ----------------------------------------------------------------------


def test_a_known_aggregate_byte_for_byte() -> None:
    """The single-record aggregate from ex_kpl's documentation (hex.pm ex_kpl 0.2.0),
    which aws_kinesis_agg also produces byte for byte (test_kpl_interop.py)."""
    builder = build([UserRecord("partition_key", None, b"data")])
    md5 = [208, 54, 153, 218, 90, 34, 47, 163, 33, 8, 173, 27, 217, 85, 161, 78]
    expected = bytes(
        [243, 137, 154, 194, 10, 13, *b"partition_key", 26, 8, 8, 0, 26, 4, *b"data", *md5]
    )
    assert builder.build() == expected
    assert builder.size == len(expected) + len("partition_key")
    assert (builder.partition_key, builder.explicit_hash_key, builder.count) == (
        "partition_key",
        None,
        1,
    )


def test_keys_are_stored_once_and_the_outer_keys_are_the_first_records() -> None:
    records = [
        UserRecord("b", None, b"1"),
        UserRecord("a", "7", b"2"),
        UserRecord("b", "7", b"3"),
        UserRecord("a", "9", b""),
    ]
    builder = build(records)
    top = walk(builder.build()[4:-16])
    assert [value for number, value in top if number == 1] == [b"b", b"a"]
    assert [value for number, value in top if number == 2] == [b"7", b"9"]
    assert (builder.partition_key, builder.explicit_hash_key) == ("b", None)
    assert build(records[1:]).explicit_hash_key == "7"
    assert decode_aggregate(builder.build()) == records


def test_an_empty_builder() -> None:
    builder = AggregateBuilder(100)
    assert (builder.size, builder.count, builder.partition_key) == (0, 0, None)
    with pytest.raises(ValueError, match="at least one record"):
        builder.build()
    with pytest.raises(ValueError, match="positive"):
        AggregateBuilder(0)


# -- properties ------------------------------------------------------------------------


@given(record_lists)
@settings(max_examples=300)
def test_round_trip_and_an_independent_reader_agree(records: list[UserRecord]) -> None:
    data = build(records).build()
    assert is_aggregate(data)
    assert decode_aggregate(data) == records
    assert independent_decode(data) == records


@given(record_lists)
@settings(max_examples=300)
def test_size_is_exact_after_every_add(records: list[UserRecord]) -> None:
    """size == len(build()) + UTF-8 bytes of the outer partition key, kept incrementally."""
    builder = AggregateBuilder(BIG)
    for count, record in enumerate(records, 1):
        assert builder.add(record)
        assert builder.count == count
        assert builder.size == len(builder.build()) + len(records[0].partition_key.encode())


@given(record_lists, st.integers(21, 3000))
@settings(max_examples=300)
def test_add_refuses_exactly_what_would_not_fit(records: list[UserRecord], limit: int) -> None:
    builder = AggregateBuilder(limit)
    taken: list[UserRecord] = []
    for record in records:
        before = (builder.size, builder.count)
        # What the aggregate would measure with the record, from an unlimited builder.
        would_be = build([*taken, record]).size
        if builder.add(record):
            taken.append(record)
            assert builder.size == would_be <= limit
        else:
            assert would_be > limit
            assert (builder.size, builder.count) == before  # unchanged
    if taken:
        assert decode_aggregate(builder.build()) == taken
        assert builder.size <= limit


def test_a_record_too_big_alone_is_refused_by_an_empty_builder() -> None:
    record = UserRecord("k", None, b"x" * 100)
    alone = build([record]).size
    assert not AggregateBuilder(alone - 1).add(record)
    assert AggregateBuilder(alone).add(record)


def test_many_records_with_multi_byte_indices() -> None:
    """More than 127 distinct keys: indices and lengths take two-byte varints."""
    records = [UserRecord(f"key-{i}", str(i), bytes(i % 256 for _ in range(i))) for i in range(400)]
    builder = build(records)
    assert builder.size == len(builder.build()) + len("key-0")
    assert decode_aggregate(builder.build()) == records
    assert independent_decode(builder.build()) == records


# -- what is not an aggregate, and what is broken ---------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        MAGIC,
        MAGIC + b"\x00" * 15,
        b'{"event_id": "1"}' * 3,
        b"\xf3\x89\x9a" + b"0" * 40,
    ],
)
def test_plain_data_is_not_an_aggregate(data: bytes) -> None:
    assert decode_aggregate(data) is None


def test_the_magic_with_a_wrong_md5_is_a_plain_record() -> None:
    data = bytearray(build([UserRecord("k", None, b"v")]).build())
    data[-1] ^= 1
    assert is_aggregate(bytes(data))  # the cheap check only looks at the magic
    assert decode_aggregate(bytes(data)) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no user record"),
        (b"\x0a\x01k", "no user record"),
        (b"\x0a\x01k\x1a\x02\x08\x00", "no data"),
        (b"\x0a\x01k\x1a\x02\x1a\x00", "no partition_key_index"),
        (b"\x1a\x04\x08\x00\x1a\x00", "partition_key_index 0 is outside the table of 0"),
        (b"\x0a\x01k\x1a\x06\x08\x00\x10\x00\x1a\x00", "explicit_hash_key_index 0 is outside"),
        (b"\x0a\x05k", "claims 5 bytes, only 1 remain"),
        (b"\x0a\x01k\x1a\x04\x08\x00\x1a\x05", "claims 5 bytes, only 0 remain"),
        (b"\x0a", "truncated varint"),
        (b"\x0a\x01k\x1a\x03\x08\x80\x80", "truncated varint"),
        (b"\x0a" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0a\x01k\x1a\x0d\x08" + b"\xff" * 9 + b"\x7f\x1a\x00", "exceeds 64 bits"),
        (b"\x0a\x02\xff\xfe\x1a\x04\x08\x00\x1a\x00", "not UTF-8"),
        (b"\x08\x01", r"partition_key_table entry before byte \d+ has wire type 0"),
        (
            b"\x0a\x01k\x1a\x04\x0a\x00\x1a\x00",
            r"record 0 partition_key_index before byte \d+ has wire type 2",
        ),
        (b"\x00", "field number 0"),
        (b"\x2b", "unsupported wire type 3"),
        (b"\x0a\x01k\x1a\x04\x08\x00\x1a\x00\x25\x00", "truncated"),
    ],
)
def test_a_broken_protobuf_behind_a_good_md5_is_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedAggregate, match=message):
        decode_aggregate(with_md5(body))


def test_unknown_fields_and_tags_are_skipped() -> None:
    """Forward compatibility, as protobuf readers do: tags (field 4) and unknown fields of
    every wire type are skipped."""
    tag = b"\x22\x05\x0a\x01t\x12\x00"  # tags { key: "t" value: "" }
    record = b"\x08\x00\x1a\x01v" + tag + b"\x28\x05" + b"\x31" + b"\x00" * 8
    body = b"\x0a\x01k" + b"\x1a" + bytes([len(record)]) + record + b"\x3d\x00\x00\x00\x00"
    assert decode_aggregate(with_md5(body)) == [UserRecord("k", None, b"v")]


def test_later_scalar_fields_win_and_tables_may_follow_records() -> None:
    """Protobuf rules: the last value of a non-repeated field counts, and repeated fields
    may interleave (the tables are resolved after the whole message is read)."""
    body = b"\x1a\x07\x08\x00\x08\x01\x1a\x01v" + b"\x0a\x01a" + b"\x0a\x01b"
    assert decode_aggregate(with_md5(body)) == [UserRecord("b", None, b"v")]


@given(record_lists, st.data())
@settings(max_examples=300)
def test_any_corruption_is_rejected_or_still_well_formed(
    records: list[UserRecord], data: st.DataObject
) -> None:
    """Flip a byte, cut the data short, or replace the protobuf (with a fixed MD5): the
    answer is None, MalformedAggregate, or user records that re-encode to the same
    protobuf; never another exception."""
    good = build(records).build()
    index = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    flipped = bytearray(good)
    flipped[index] ^= flip
    cut = good[: data.draw(st.integers(0, len(good) - 1))]
    body = bytearray(good[4:-16])
    if body:
        body[data.draw(st.integers(0, len(body) - 1))] ^= flip
    resealed = with_md5(bytes(body))
    for candidate in (bytes(flipped), cut, resealed):
        try:
            decoded = decode_aggregate(candidate)
        except MalformedAggregate:
            continue
        if candidate is not resealed:
            # The MD5 no longer matches: always plain data.
            assert decoded is None
        elif decoded is not None:
            assert len(decoded) >= 1


@given(st.binary(max_size=400))
@settings(max_examples=500)
def test_random_protobuf_bodies_never_raise_anything_else(body: bytes) -> None:
    try:
        decoded = decode_aggregate(with_md5(body))
    except MalformedAggregate:
        return
    assert decoded


def test_hostile_lengths_allocate_nothing_large() -> None:
    """A length of 2**63 is refused from the remaining byte count, before any slicing."""
    body = b"\x0a" + b"\xff" * 8 + b"\x7f"
    with pytest.raises(MalformedAggregate, match="claims"):
        decode_aggregate(with_md5(body))
