"""The producer's buffer on its own: which PutRecords calls ``ShardQueues.plan`` makes and
when, and how ``pack`` turns a shard's records into Kinesis records. Time is passed in."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from streams.kpl import decode_aggregate
from streams.producer_api import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, ProducerConfig
from streams.producer_queues import Entry, Outgoing, ShardQueues
from streams.shard_map import ShardMap, ShardRange, hash_key_of
from tests.unit.fake_put_kinesis import effective_hash_key

T0 = 1000.0


def entry(
    key: str, data: bytes = b"x", now: float = T0, explicit_hash_key: str | None = None
) -> Entry:
    return Entry(
        data,
        key,
        explicit_hash_key,
        hash_key_of(key, explicit_hash_key),
        Future(),
        now,
        len(data) + len(key.encode("utf-8")),
    )


def queues(**config: object) -> ShardQueues:
    return ShardQueues(ProducerConfig(**config))  # type: ignore[arg-type]


def fill(q: ShardQueues, shard_id: str, entries: list[Entry], now: float = T0) -> list[Entry]:
    shard = q.shard(shard_id, now)
    for e in entries:
        shard.append(e)
    return entries


def done(q: ShardQueues, calls: list[list[Outgoing]]) -> None:
    """The calls came back: their shards may be in a call again (as the producer does)."""
    for call in calls:
        for outgoing in call:
            q.shards[outgoing.shard_id].in_flight -= 1


def members(calls: list[list[Outgoing]]) -> list[Entry]:
    return [m for call in calls for o in call for m in o.members]


def keys(calls: list[list[Outgoing]]) -> list[str]:
    return [m.partition_key for m in members(calls)]


def unpacked(outgoing: list[Outgoing]) -> list[bytes]:
    """The user records' data, as a consumer reads them from the packed records."""
    out: list[bytes] = []
    for o in outgoing:
        inner = decode_aggregate(o.data)
        out += [o.data] if inner is None else [u.data for u in inner]
    return out


# -- when a shard's records go ---------------------------------------------------------------


def test_records_wait_for_the_linger_time_then_go() -> None:
    q = queues(linger_ms=100)
    fill(q, "s0", [entry("a"), entry("b")])

    calls, wait = q.plan(T0 + 0.04, room=4, urgent=False)
    assert calls == []
    assert wait == pytest.approx(0.06)

    calls, wait = q.plan(T0 + 0.1, room=4, urgent=False)
    assert keys(calls) == ["a", "b"]


def test_the_linger_counts_from_the_oldest_record() -> None:
    q = queues(linger_ms=100)
    fill(q, "s0", [entry("a", now=T0)])
    fill(q, "s0", [entry("b", now=T0 + 0.09)])
    calls, _ = q.plan(T0 + 0.1, room=4, urgent=False)
    assert keys(calls) == ["a", "b"]


def test_a_flush_sends_at_once() -> None:
    q = queues(linger_ms=10_000)
    fill(q, "s0", [entry("a")])
    assert q.plan(T0, room=4, urgent=False)[0] == []
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert keys(calls) == ["a"]


def test_a_call_s_worth_goes_without_waiting_for_the_linger() -> None:
    q = queues(linger_ms=10_000)
    fill(q, "s0", [entry(f"k{n}") for n in range(MAX_RECORDS_PER_CALL - 1)])
    assert q.plan(T0, room=4, urgent=False)[0] == []
    fill(q, "s0", [entry("last")])
    calls, _ = q.plan(T0, room=4, urgent=False)
    assert [len(c) for c in calls] == [MAX_RECORDS_PER_CALL]


def test_an_aggregate_s_worth_goes_without_waiting_for_the_linger() -> None:
    q = queues(linger_ms=10_000, aggregate=True, max_aggregate_bytes=1000)
    entries = fill(q, "s0", [entry(f"k{n}", b"x" * 98) for n in range(9)])  # 900 bytes
    assert q.plan(T0, room=4, urgent=False)[0] == []
    entries += fill(q, "s0", [entry("k9", b"x" * 98)])  # 1000 bytes: an aggregate's worth

    calls, _ = q.plan(T0, room=4, urgent=False)

    (sent,) = [o for call in calls for o in call]
    assert 1 < len(sent.members) < 10
    rest = list(q.shards["s0"].queue)
    assert sent.size <= 1000 < sent.size + rest[0].size  # a full aggregate
    # The part-filled aggregate behind it waits for more records, or for the linger.
    assert [*sent.members, *rest] == entries
    done(q, calls)
    assert q.plan(T0 + 1, room=4, urgent=False)[0] == []
    calls, _ = q.plan(T0 + 10, room=4, urgent=False)
    assert members(calls) == rest


def test_calls_hold_at_most_500_records_and_5_mib() -> None:
    q = queues(rate_limit=10)  # tokens for 10,000 records and 10 MiB: only the call limits
    fill(q, "s0", [entry(f"a{n}") for n in range(700)])
    big = b"x" * (900 * 1024)
    fill(q, "s1", [entry(f"b{n}", big) for n in range(7)])
    calls, _ = q.plan(T0, room=10, urgent=True)
    for call in calls:
        assert len(call) <= MAX_RECORDS_PER_CALL
        assert sum(o.size for o in call) <= MAX_BYTES_PER_CALL
    # Each shard's first call's worth went; the rest waits for that call, in order.
    assert sorted(len(c) for c in calls) == [5, 500]
    assert [e.partition_key for e in q.shards["s0"].queue] == [f"a{n}" for n in range(500, 700)]
    assert [e.partition_key for e in q.shards["s1"].queue] == ["b5", "b6"]


def test_one_call_in_flight_per_shard() -> None:
    q = queues(linger_ms=0)
    fill(q, "s0", [entry(f"k{n}") for n in range(600)])
    fill(q, "s1", [entry("other")])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert sorted({o.shard_id for c in calls for o in c}) == ["s0", "s1"]
    assert len(q.shards["s0"].queue) == 100

    fill(q, "s1", [entry("more")])
    assert q.plan(T0, room=4, urgent=True)[0] == []  # both shards are in a call

    done(q, calls)
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert len(members(calls)) == 101


def test_no_room_no_calls() -> None:
    q = queues()
    fill(q, "s0", [entry("a")])
    assert q.plan(T0, room=0, urgent=True)[0] == []
    assert len(q.shards["s0"].queue) == 1


def test_tokens_limit_the_records_a_shard_sends() -> None:
    q = queues(rate_limit=0.01)  # 10 records/s a shard, and a burst of 10
    fill(q, "s0", [entry(f"k{n}") for n in range(25)])

    calls, _ = q.plan(T0, room=4, urgent=True)
    assert len(members(calls)) == 10
    done(q, calls)

    assert q.plan(T0, room=4, urgent=True)[0] == []
    calls, _ = q.plan(T0 + 0.5, room=4, urgent=True)
    assert len(members(calls)) == 5
    assert keys(calls) == [f"k{n}" for n in range(10, 15)]  # in order, nothing skipped


def test_byte_tokens_limit_the_bytes_a_shard_sends() -> None:
    q = queues(rate_limit=0.1)  # 100 records/s, 104,857.6 bytes/s a shard
    fill(q, "s0", [entry(f"k{n}", b"x" * 40_000) for n in range(5)])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert len(members(calls)) == 2
    done(q, calls)
    assert q.plan(T0 + 0.1, room=4, urgent=True)[0] == []
    calls, _ = q.plan(T0 + 0.4, room=4, urgent=True)
    assert len(members(calls)) == 1


def test_a_shard_out_of_record_tokens_says_how_long_to_wait() -> None:
    q = queues(rate_limit=0.01, linger_ms=1000)  # 10 records/s
    fill(q, "s0", [entry(f"k{n}") for n in range(11)])
    calls, _ = q.plan(T0, room=4, urgent=True)
    done(q, calls)
    calls, wait = q.plan(T0, room=4, urgent=True)
    assert calls == []
    assert wait == pytest.approx(0.1)


def test_a_shard_out_of_byte_tokens_keeps_its_record_tokens_and_says_how_long_to_wait() -> None:
    q = queues(linger_ms=1000)
    fill(q, "s0", [entry("a", b"x" * 600_000), entry("b", b"x" * 600_000)])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert keys(calls) == ["a"]
    done(q, calls)
    shard = q.shards["s0"]
    records_before = shard.records.available(T0)
    calls, wait = q.plan(T0, room=4, urgent=True)
    assert calls == []
    assert shard.records.available(T0) == records_before
    assert wait == pytest.approx(shard.bytes.wait_time(600_001, T0))
    assert wait > 0.1


def test_records_in_backoff_wait_and_say_when() -> None:
    q = queues(linger_ms=1000)
    shard = q.shard("s0", T0)
    retried = entry("a")
    retried.not_before = T0 + 0.25
    q.retry_later(shard, [retried])
    calls, wait = q.plan(T0, room=4, urgent=True)
    assert calls == []
    assert wait == pytest.approx(0.25)
    calls, _ = q.plan(T0 + 0.25, room=4, urgent=True)
    assert members(calls) == [retried]


# -- ordered mode ------------------------------------------------------------------------------


def test_ordered_mode_sends_at_most_one_record_per_key_per_call() -> None:
    q = queues(ordered=True)
    fill(q, "s0", [entry(k, k.encode() + bytes([n])) for n, k in enumerate("aabab")])
    sent: list[bytes] = []
    for _ in range(10):
        calls, _ = q.plan(T0, room=4, urgent=True)
        for call in calls:
            call_keys = [m.partition_key for o in call for m in o.members]
            assert len(call_keys) == len(set(call_keys)), call_keys
        sent += [m.data for m in members(calls)]
        done(q, calls)
    assert sent == [k.encode() + bytes([n]) for n, k in enumerate("aabab")]


def test_ordered_mode_sends_records_of_different_keys_in_one_call() -> None:
    q = queues(ordered=True)
    fill(q, "s0", [entry(k) for k in "abcd"])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert keys(calls) == ["a", "b", "c", "d"]


def test_ordered_mode_puts_a_failed_record_back_before_the_rest_of_its_shard() -> None:
    q = queues(ordered=True, linger_ms=0)
    a1, a2 = entry("a", b"a1"), entry("a", b"a2")
    fill(q, "s0", [a1, a2])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert members(calls) == [a1]
    done(q, calls)
    a1.not_before = T0 + 0.5
    q.retry_later(q.shards["s0"], [a1])
    assert q.plan(T0 + 0.1, room=4, urgent=True)[0] == []  # a2 does not overtake a1
    calls, _ = q.plan(T0 + 0.5, room=4, urgent=True)
    assert members(calls) == [a1]


def test_ordered_aggregated_mode_sends_one_aggregate_per_shard_per_call() -> None:
    q = queues(ordered=True, aggregate=True, max_aggregate_bytes=400)
    entries = fill(q, "s0", [entry(k, b"x" * 50) for k in "abababab"])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert [len(c) for c in calls] == [1]
    first = members(calls)
    assert first == entries[: len(first)]
    assert 1 < len(first) < len(entries)
    assert list(q.shards["s0"].queue) == entries[len(first) :]


# -- packing -----------------------------------------------------------------------------------


def test_without_aggregation_every_record_goes_alone_as_given() -> None:
    q = queues()
    entries = [entry("a", b"1"), entry("b", b"2", explicit_hash_key="7")]
    out = q.pack("s0", entries)
    assert [(o.data, o.partition_key, o.explicit_hash_key, o.members) for o in out] == [
        (b"1", "a", None, [entries[0]]),
        (b"2", "b", "7", [entries[1]]),
    ]


def test_aggregates_split_at_max_aggregate_bytes_and_keep_the_order() -> None:
    q = queues(aggregate=True, max_aggregate_bytes=1000)
    entries = [entry(f"key-{n}", bytes([n]) * 280) for n in range(10)]
    out = q.pack("s0", entries)
    assert len(out) > 1
    assert all(o.size <= 1000 for o in out)
    assert all(len(o.members) == 3 for o in out[:-1])  # 3 x ~295 bytes fit, 4 do not
    assert unpacked(out) == [e.data for e in entries]
    assert [m for o in out for m in o.members] == entries


def test_every_record_of_an_aggregate_carries_the_first_record_s_hash_key() -> None:
    q = queues(aggregate=True)
    entries = [entry(f"user-{n}", b"payload") for n in range(20)]
    (out,) = q.pack("s0", entries)
    shared = str(entries[0].hash_key)
    assert out.partition_key == "user-0"
    assert out.explicit_hash_key == shared
    inner = decode_aggregate(out.data)
    assert inner is not None
    assert [u.partition_key for u in inner] == [e.partition_key for e in entries]
    assert {u.explicit_hash_key for u in inner} == {shared}
    assert {effective_hash_key(u) for u in inner} == {entries[0].hash_key}


def test_a_lone_record_goes_un_aggregated_with_its_own_hash_key() -> None:
    q = queues(aggregate=True)
    lone = entry("a", b"just me")
    (out,) = q.pack("s0", [lone])
    assert out.data == b"just me"
    assert decode_aggregate(out.data) is None
    assert out.members == [lone]
    assert int(out.explicit_hash_key or -1) == hash_key_of("a")


def test_caller_explicit_hash_keys_go_alone_keep_their_key_and_keep_the_order() -> None:
    q = queues(aggregate=True)
    e = [
        entry("a", b"1"),
        entry("b", b"2"),
        entry("c", b"3", explicit_hash_key="42"),
        entry("d", b"4"),
        entry("e", b"5"),
    ]
    out = q.pack("s0", e)
    assert [len(o.members) for o in out] == [2, 1, 2]
    assert out[1].data == b"3"
    assert out[1].explicit_hash_key == "42"
    assert decode_aggregate(out[1].data) is None
    assert out[2].explicit_hash_key == str(e[3].hash_key)  # a new aggregate, a new key
    assert unpacked(out) == [b"1", b"2", b"3", b"4", b"5"]


def test_a_record_too_big_to_aggregate_goes_alone() -> None:
    q = queues(aggregate=True, max_aggregate_bytes=1000)
    big = entry("big", b"B" * 5000)
    out = q.pack("s0", [entry("a", b"1"), entry("b", b"2"), big])
    assert unpacked(out) == [b"1", b"2", b"B" * 5000]


def test_a_record_too_big_to_aggregate_followed_by_small_ones_is_not_lost() -> None:
    q = queues(aggregate=True, max_aggregate_bytes=1000)
    entries = [entry("big", b"B" * 5000), entry("a", b"1"), entry("b", b"2")]
    out = q.pack("s0", entries)
    assert [m for o in out for m in o.members] == entries
    assert unpacked(out) == [b"B" * 5000, b"1", b"2"]


# -- retries and resharding ------------------------------------------------------------------


def test_unordered_retries_go_before_newer_records_once_their_backoff_is_over() -> None:
    q = queues(linger_ms=0)
    shard = q.shard("s0", T0)
    old = entry("old")
    old.not_before = T0 + 0.1
    q.retry_later(shard, [old])
    fill(q, "s0", [entry("new")])
    calls, _ = q.plan(T0, room=4, urgent=True)
    assert keys(calls) == ["new"]
    done(q, calls)
    calls, _ = q.plan(T0 + 0.1, room=4, urgent=True)
    assert keys(calls) == ["old"]


def test_rebalance_moves_records_of_closed_shards_to_the_shards_holding_their_keys() -> None:
    q = queues()
    half = 2**127
    low, high = entry("x", explicit_hash_key="5"), entry("y", explicit_hash_key=str(half + 5))
    fill(q, "parent", [low, high])
    children = ShardMap([ShardRange("low", 0, half - 1), ShardRange("high", half, 2**128 - 1)])
    q.rebalance(children, T0)
    assert "parent" not in q.shards
    assert list(q.shards["low"].queue) == [low]
    assert list(q.shards["high"].queue) == [high]


def test_drain_all_empties_every_queue() -> None:
    q = queues(linger_ms=0)
    a, b = entry("a"), entry("b")
    fill(q, "s0", [a])
    b.not_before = T0 + 9
    q.retry_later(q.shard("s1", T0), [b])
    assert set(q.drain_all()) == {a, b}
    assert q.plan(T0 + 10, room=4, urgent=True)[0] == []
