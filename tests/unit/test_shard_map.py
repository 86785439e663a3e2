"""Which shard Kinesis puts a record on: the MD5 of its partition key (or its explicit hash
key) inside an open shard's inclusive hash key range."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest

from streams.shard_map import (
    MAX_HASH_KEY,
    ShardMap,
    ShardRange,
    check_explicit_hash_key,
    hash_key_of,
)
from tests.unit.fake_put_kinesis import FakePutKinesis, even_ranges


def listed(shard_id: str, start: int, end: int, closed: bool = False) -> dict[str, Any]:
    shard: dict[str, Any] = {
        "ShardId": shard_id,
        "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
        "SequenceNumberRange": {"StartingSequenceNumber": "1"},
    }
    if closed:
        shard["SequenceNumberRange"]["EndingSequenceNumber"] = "9"
    return shard


def test_the_hash_key_is_the_md5_of_the_utf8_partition_key_as_a_big_endian_integer() -> None:
    # md5("a") = 0cc175b9c0f1b6a831c399e269772661
    assert hash_key_of("a") == 0x0CC175B9C0F1B6A831C399E269772661
    key = "ключ-🔑"
    digest = hashlib.md5(key.encode("utf-8")).hexdigest()
    assert hash_key_of(key) == int(digest, 16)


def test_an_explicit_hash_key_replaces_the_md5() -> None:
    assert hash_key_of("a", "0") == 0
    assert hash_key_of("a", str(MAX_HASH_KEY)) == MAX_HASH_KEY
    assert hash_key_of("anything", "12345") == 12345


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("0", True),
        ("340282366920938463463374607431768211455", True),  # 2**128 - 1
        ("340282366920938463463374607431768211456", False),  # 2**128
        ("", False),
        ("-1", False),
        ("+1", False),
        ("1.0", False),
        (" 1", False),
        ("0x10", False),
        ("\uff11\uff12", False),  # full-width digits: isdigit() but not ASCII
        ("\u00b2", False),  # superscript two: isdigit() but not a decimal integer
    ],
)
def test_explicit_hash_keys_must_be_decimal_integers_up_to_2_128_minus_1(
    key: str, valid: bool
) -> None:
    problem = check_explicit_hash_key(key)
    assert (problem is None) == valid, problem


def test_range_boundaries_are_inclusive_at_both_ends() -> None:
    shards = ShardMap(
        [ShardRange("high", 100, MAX_HASH_KEY), ShardRange("low", 0, 49), ShardRange("mid", 50, 99)]
    )
    assert shards.shard_ids == ["low", "mid", "high"]  # sorted by range
    assert [shards.shard_for(k) for k in (0, 49, 50, 99, 100, MAX_HASH_KEY)] == [
        "low",
        "low",
        "mid",
        "mid",
        "high",
        "high",
    ]


def test_from_shards_leaves_out_closed_shards() -> None:
    # A split: the parent (closed) covers everything; its children split it at 2**127.
    half = 2**127
    shards = ShardMap.from_shards(
        [
            listed("shardId-000000000000", 0, MAX_HASH_KEY, closed=True),
            listed("shardId-000000000001", 0, half - 1),
            listed("shardId-000000000002", half, MAX_HASH_KEY),
        ]
    )
    assert shards.shard_ids == ["shardId-000000000001", "shardId-000000000002"]
    assert shards.shard_for(0) == "shardId-000000000001"
    assert shards.shard_for(half - 1) == "shardId-000000000001"
    assert shards.shard_for(half) == "shardId-000000000002"
    assert shards.range_of("shardId-000000000000") is None
    assert shards.range_of("shardId-000000000002") == ShardRange(
        "shardId-000000000002", half, MAX_HASH_KEY
    )


def test_a_stream_without_an_open_shard_is_an_error() -> None:
    with pytest.raises(ValueError, match="open shard"):
        ShardMap.from_shards([listed("shardId-000000000000", 0, MAX_HASH_KEY, closed=True)])


def test_even_ranges_cover_the_hash_key_space_without_gaps() -> None:
    ranges = even_ranges(3)
    assert ranges[0][0] == 0
    assert ranges[-1][1] == MAX_HASH_KEY
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


def test_the_prediction_agrees_with_the_fake_stream_for_many_keys_and_after_a_split() -> None:
    kinesis = FakePutKinesis(shards=5)
    keys = [f"user-{n}" for n in range(2000)]
    for _ in range(2):
        shards = kinesis.shard_map()
        for key in keys:
            assert shards.shard_for(hash_key_of(key)) == kinesis.owner(hash_key_of(key)).shard_id
        assert len({shards.shard_for(hash_key_of(k)) for k in keys}) == len(shards.shard_ids)
        kinesis.split(kinesis.open_shards()[2].shard_id)
