"""Approximate aggregators whose merges are exact: partial rows from shards, batches and
restarts merge in any grouping to the same state, bit for bit.

- :class:`ApproxQuantile`: a DDSketch-style sketch. Values fall in logarithmic buckets of
  relative width ``relative_accuracy``; a quantile is read back within that relative error
  of the true value at that rank. At most ``max_buckets`` buckets per sign: beyond that the
  smallest magnitudes fold into one bucket, which depends only on the largest bucket, so
  the fold is the same in any merge order.
- :class:`ApproxDistinct`: HyperLogLog with 2**precision one-byte registers (4,096 by
  default: about 1.6% standard error), a stable 64-bit BLAKE2 hash, linear counting for
  small cardinalities, and a sparse stored form while few registers are set.

Libraries were considered: Apache DataSketches' HLL union switches estimators (HIP for a
single stream, composite after a union), so a sketch built in one pass and one merged from
parts give different estimates; these merge laws must hold exactly.

States are mutable (``add`` updates in place and returns the state); ``merge`` never
changes its inputs.
"""

from __future__ import annotations

import base64
import math
import re
from hashlib import blake2b
from typing import Any

_TINY = 1e-9
_NON_ZERO = re.compile(rb"[^\x00]")


class ApproxQuantile:
    """The ``quantile`` (0 to 1) of the values, within ``relative_accuracy``."""

    kind = "quantile"
    version = 1
    mutable_state = True

    def __init__(
        self, quantile: float, relative_accuracy: float = 0.01, max_buckets: int = 2048
    ) -> None:
        if not 0 <= quantile <= 1:
            raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative accuracy must be between 0 and 1, got {relative_accuracy}")
        self.quantile = quantile
        self.relative_accuracy = relative_accuracy
        self.max_buckets = max_buckets
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)

    # state: [positive buckets {key: count}, negative buckets {key: count}, zero count,
    #         largest positive key, largest negative key]
    # Invariant: no key of a side is below (that side's largest key - max_buckets + 1);
    # smaller magnitudes live in that floor bucket. The state is then a function of the
    # values alone, whatever order they were added or merged in.

    def initial(self) -> list[Any]:
        return [{}, {}, 0, None, None]

    def _key(self, magnitude: float) -> int:
        return math.ceil(math.log(magnitude) / self._log_gamma)

    def add(self, state: list[Any], value: Any) -> list[Any]:
        if value > _TINY:
            side = 0
        elif value < -_TINY:
            side = 1
            value = -value
        else:
            state[2] += 1
            return state
        buckets = state[side]
        key = self._key(value)
        top = state[3 + side]
        if top is None or key > top:
            state[3 + side] = key
            if top is not None:  # the floor rises with the largest key
                self._fold_below(buckets, key - self.max_buckets + 1)
        else:
            key = max(key, top - self.max_buckets + 1)
        buckets[key] = buckets.get(key, 0) + 1
        return state

    def _fold_below(self, buckets: dict[int, int], floor: int) -> None:
        low = [key for key in buckets if key < floor]
        if low:
            folded = sum(buckets.pop(key) for key in low)
            buckets[floor] = buckets.get(floor, 0) + folded

    def merge(self, left: list[Any], right: list[Any]) -> list[Any]:
        merged: list[Any] = [dict(left[0]), dict(left[1]), left[2] + right[2], None, None]
        for side in (0, 1):
            buckets = merged[side]
            for key, count in right[side].items():
                buckets[key] = buckets.get(key, 0) + count
            if buckets:
                top = max(buckets)
                merged[3 + side] = top
                self._fold_below(buckets, top - self.max_buckets + 1)
        return merged

    def result(self, state: list[Any]) -> float | None:
        positive, negative, zeros = state[0], state[1], state[2]
        total = sum(positive.values()) + sum(negative.values()) + zeros
        if total == 0:
            return None
        rank = self.quantile * (total - 1)
        seen = 0
        for key in sorted(negative, reverse=True):
            seen += negative[key]
            if seen > rank:
                return -self._value(key)
        seen += zeros
        if seen > rank:
            return 0.0
        for key in sorted(positive):
            seen += positive[key]
            if seen > rank:
                return self._value(key)
        return self._value(max(positive))  # pragma: no cover (rank < total)

    def _value(self, key: int) -> float:
        return 2 * self._gamma**key / (self._gamma + 1)

    def to_stored(self, state: list[Any]) -> Any:
        positive, negative, zeros = state[0], state[1], state[2]
        return {
            "accuracy": self.relative_accuracy,
            "pos": sorted(positive.items()),
            "neg": sorted(negative.items()),
            "zero": zeros,
        }

    def from_stored(self, stored: Any) -> list[Any]:
        if stored["accuracy"] != self.relative_accuracy:
            raise ValueError(
                f"stored sketch has accuracy {stored['accuracy']}, not {self.relative_accuracy}"
            )
        positive = {key: count for key, count in stored["pos"]}
        negative = {key: count for key, count in stored["neg"]}
        return [
            positive,
            negative,
            stored["zero"],
            max(positive, default=None),
            max(negative, default=None),
        ]


class ApproxDistinct:
    """The number of distinct values (strings, numbers), estimated by HyperLogLog."""

    kind = "distinct"
    version = 1
    mutable_state = True

    def __init__(self, precision: int = 12) -> None:
        if not 4 <= precision <= 16:
            raise ValueError(f"precision must be 4 to 16, got {precision}")
        self.precision = precision
        self._registers = 1 << precision
        self._alpha = 0.7213 / (1 + 1.079 / self._registers)

    def initial(self) -> bytearray:
        return bytearray(self._registers)

    def add(self, state: bytearray, value: Any) -> bytearray:
        digest = blake2b(str(value).encode(), digest_size=8).digest()
        hashed = int.from_bytes(digest, "big")
        index = hashed >> (64 - self.precision)
        rest = hashed & ((1 << (64 - self.precision)) - 1)
        rank = (64 - self.precision) - rest.bit_length() + 1
        state[index] = max(state[index], rank)
        return state

    def merge(self, left: bytearray, right: bytearray) -> bytearray:
        return bytearray(max(a, b) for a, b in zip(left, right, strict=True))

    def result(self, state: bytearray) -> int:
        m = self._registers
        empty = state.count(0)
        if empty == m:
            return 0
        # The harmonic sum over the registers, from how many hold each rank: a count in C
        # per rank present, not a Python loop over every register (and, with fsum, the
        # correctly rounded sum whatever the order).
        terms, left, rank = [], m, 0
        while left:
            held = state.count(rank)
            if held:
                terms.append(held * 2.0**-rank)
                left -= held
            rank += 1
        estimate = self._alpha * m * m / math.fsum(terms)
        if estimate <= 2.5 * m and empty:
            estimate = m * math.log(m / empty)  # linear counting
        return round(estimate)

    def to_stored(self, state: bytearray) -> Any:
        # Every dirty row is encoded at every flush: count and find the set registers in C
        # (bytes.count, a regex scan) rather than looping over all of them in Python.
        if (self._registers - state.count(0)) * 8 < self._registers:
            sparse = [(m.start(), state[m.start()]) for m in _NON_ZERO.finditer(state)]
            return {"p": self.precision, "sparse": sparse}
        return {"p": self.precision, "dense": base64.b64encode(bytes(state)).decode("ascii")}

    def from_stored(self, stored: Any) -> bytearray:
        if stored["p"] != self.precision:
            raise ValueError(f"stored sketch has precision {stored['p']}, not {self.precision}")
        if "dense" in stored:
            return bytearray(base64.b64decode(stored["dense"]))
        state = bytearray(self._registers)
        for index, rank in stored["sparse"]:
            state[index] = rank
        return state
