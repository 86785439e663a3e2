"""Token buckets for the per-shard write limits (1,000 records/s and 1 MiB/s a shard)."""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, holding at most ``capacity``. Time is passed in."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a token bucket needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def can_take(self, amount: float, now: float) -> bool:
        """Whether ``amount`` tokens are there (an amount above the capacity is allowed once
        the bucket is full, so one large item is never stuck)."""
        self._refill(now)
        return self._tokens >= amount or (self._tokens >= self.capacity and amount > self.capacity)

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if :meth:`can_take`."""
        if self.can_take(amount, now):
            self._tokens -= amount
            return True
        return False

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` tokens can be taken."""
        self._refill(now)
        needed = min(amount, self.capacity) - self._tokens
        return max(0.0, needed / self.rate)

    def drain(self, now: float) -> None:
        """Empty the bucket (after Kinesis said the shard was over its limit)."""
        self._refill(now)
        self._tokens = 0.0
