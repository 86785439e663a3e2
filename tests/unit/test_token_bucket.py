"""The token bucket behind the per-shard write limits: time is passed in, so every figure
here is exact."""

from __future__ import annotations

import pytest

from streams.token_bucket import TokenBucket


def test_a_new_bucket_is_full() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=100.0)
    assert bucket.available(100.0) == 5
    assert bucket.take(5, 100.0)
    assert not bucket.take(1, 100.0)


def test_it_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    assert bucket.take(5, 0.0)
    assert bucket.available(0.2) == pytest.approx(2.0)
    assert bucket.available(0.3) == pytest.approx(3.0)
    assert bucket.available(60.0) == 5  # never above the capacity


def test_a_failed_take_takes_nothing() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=0.0)
    assert bucket.take(4, 0.0)
    assert not bucket.take(2, 0.0)
    assert bucket.available(0.0) == pytest.approx(1.0)
    assert bucket.take(1, 0.0)


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=10, capacity=5, now=1.0)
    assert bucket.take(5, 1.0)
    assert bucket.available(0.5) == 0
    assert bucket.available(1.1) == pytest.approx(1.0)


def test_wait_time_is_when_the_amount_is_there() -> None:
    bucket = TokenBucket(rate=100, capacity=50, now=0.0)
    assert bucket.wait_time(50, 0.0) == 0
    assert bucket.take(50, 0.0)
    assert bucket.wait_time(1, 0.0) == pytest.approx(0.01)
    assert bucket.wait_time(25, 0.0) == pytest.approx(0.25)
    assert bucket.wait_time(25, 0.1) == pytest.approx(0.15)
    assert not bucket.take(25, 0.249)
    assert bucket.take(25, 0.25)


def test_drain_empties_the_bucket_and_it_refills_from_then() -> None:
    bucket = TokenBucket(rate=1000, capacity=1000, now=0.0)
    bucket.drain(0.0)
    assert bucket.available(0.0) == 0
    assert not bucket.take(1, 0.0)
    assert bucket.wait_time(1, 0.0) == pytest.approx(0.001)
    assert bucket.available(0.5) == pytest.approx(500)


def test_an_item_larger_than_the_capacity_goes_once_the_bucket_is_full() -> None:
    bucket = TokenBucket(rate=100, capacity=100, now=0.0)
    assert bucket.take(1, 0.0)
    assert not bucket.take(150, 0.0)  # not full: it waits
    assert bucket.wait_time(150, 0.0) == pytest.approx(0.01)  # until full, not for 150
    assert bucket.take(150, 0.01)
    # It went into debt: the next token is 50 + 1 tokens away.
    assert bucket.available(0.01) == pytest.approx(-50)
    assert bucket.wait_time(1, 0.01) == pytest.approx(0.51)
    assert not bucket.take(1, 0.5)
    assert bucket.take(1, 0.52)


def test_the_long_run_rate_holds_whatever_the_item_sizes() -> None:
    bucket = TokenBucket(rate=1000, capacity=1000, now=0.0)
    taken = 0.0
    now = 0.0
    sizes = [1, 7, 300, 1500, 20, 999]
    n = 0
    while now < 10.0:
        size = sizes[n % len(sizes)]
        if bucket.take(size, now):
            taken += size
            n += 1
        else:
            now += max(bucket.wait_time(size, now), 1e-6)
    # At most the initial burst, the refill over 10 s, and one oversized item's debt.
    assert taken <= 1000 + 1000 * 10 + 1500
    assert taken >= 1000 * 10 - 1500


@pytest.mark.parametrize(("rate", "capacity"), [(0, 1), (1, 0), (-1, 5)])
def test_rate_and_capacity_must_be_positive(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate, capacity, 0.0)
