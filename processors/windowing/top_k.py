"""The most frequent items (heavy hitters) of a window, mergeable across shards, batches and
restarts.

:class:`TopK` keeps one counter per item, at most ``capacity`` of them: the mergeable
Misra-Gries summary of Agarwal et al., "Mergeable Summaries" (PODS 2012).

- While the items seen number at most ``capacity``, the counts are exact and ``merge``
  (adding counts) is associative and commutative, with ``initial()`` as its identity.
- Beyond that, every merge and every ``add`` that leaves more than ``capacity`` counters
  subtracts the (``capacity`` + 1)-th largest count from every counter and drops those
  that reach 0. The merge laws then hold only approximately (the state depends on the
  grouping), but in any grouping and order, for every item:
  ``true count - (N - sum of counters) / (capacity + 1) <= estimate <= true count``,
  N being the number of items added (kept in the state). :meth:`TopK.error_bound` gives
  that slack; it is 0 while the counts are exact, and never more than N / (capacity + 1).
  So any item seen more than N / (capacity + 1) times is sure to be among the counters.

States are mutable (``add`` updates in place and returns the state); ``merge`` never
changes its inputs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

TRUNCATED = "…"


@dataclass(slots=True)
class TopKState:
    """Counters by item (at most ``capacity``) and the number of items added, ``total``."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0


def _by_count(pair: tuple[str, int]) -> tuple[int, str]:
    return (-pair[1], pair[0])


class TopK:
    """The ``k`` most frequent items, as ``[[item, count], ...]``: largest count first, equal
    counts by item. Exact while at most ``capacity`` items are distinct; beyond that the
    counts may fall short by up to :meth:`error_bound` (see the module docstring).

    Items are strings (a user id, an error code); any other value counts as its ``str()``,
    as in ApproxDistinct, so ``7`` and ``"7"`` are one item and ``True`` is ``"True"``.
    Nothing is refused: an exception would stop the shard. Items longer than
    ``max_item_chars`` are cut to that many characters plus ``"…"``, which bounds the
    stored row.

    Stored size: at most about ``capacity * (6 * max_item_chars + 30)`` bytes of JSON (a
    character takes 1 to 4 bytes in UTF-8, 6 as a JSON escape). With the defaults (256
    items of at most 64 characters) that is under 106 KB even for the worst text, a
    quarter of DynamoDB's 400 KB item limit, which the row's keys and other aggregates
    share; ASCII ids take about a fifth of that. Raise ``capacity`` only with short items.
    """

    kind = "top_k"
    version = 1
    mutable_state = True

    def __init__(self, k: int = 10, capacity: int = 256, max_item_chars: int = 64) -> None:
        for name, number in (("k", k), ("capacity", capacity), ("max_item_chars", max_item_chars)):
            if not isinstance(number, int) or isinstance(number, bool):
                raise TypeError(f"{name} must be an int, got {number!r}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if capacity < k:
            raise ValueError(f"capacity must be at least k ({k}), got {capacity}")
        if max_item_chars < 1:
            raise ValueError(f"max_item_chars must be at least 1, got {max_item_chars}")
        self.k = k
        self.capacity = capacity
        self.max_item_chars = max_item_chars

    def initial(self) -> TopKState:
        return TopKState()

    def item(self, value: Any) -> str:
        """The item ``value`` counts as: its text, cut to ``max_item_chars`` plus "…"."""
        text = value if isinstance(value, str) else str(value)
        if len(text) > self.max_item_chars:
            return text[: self.max_item_chars] + TRUNCATED
        return text

    def add(self, state: TopKState, value: Any) -> TopKState:
        item = self.item(value)
        counts = state.counts
        state.total += 1
        if item in counts:
            counts[item] += 1
        elif len(counts) < self.capacity:
            counts[item] = 1
        else:
            # capacity + 1 counters, the new one the smallest (1): subtract 1 from all.
            state.counts = {key: count - 1 for key, count in counts.items() if count > 1}
        return state

    def merge(self, left: TopKState, right: TopKState) -> TopKState:
        counts = dict(left.counts)
        for item, count in right.counts.items():
            counts[item] = counts.get(item, 0) + count
        if len(counts) > self.capacity:
            cut = heapq.nlargest(self.capacity + 1, counts.values())[-1]
            counts = {item: count - cut for item, count in counts.items() if count > cut}
        return TopKState(counts, left.total + right.total)

    def result(self, state: TopKState) -> list[list[Any]]:
        top = heapq.nsmallest(self.k, state.counts.items(), key=_by_count)
        return [[item, count] for item, count in top]

    def error_bound(self, state: TopKState) -> int:
        """How far any count in ``state`` may fall short of the true count: 0 while exact,
        at most ``total / (capacity + 1)``."""
        return (state.total - sum(state.counts.values())) // (self.capacity + 1)

    def to_stored(self, state: TopKState) -> Any:
        return {
            "capacity": self.capacity,
            "max_item_chars": self.max_item_chars,
            "total": state.total,
            "counts": [
                [item, count] for item, count in sorted(state.counts.items(), key=_by_count)
            ],
        }

    def from_stored(self, stored: Any) -> TopKState:
        if not isinstance(stored, dict) or sorted(stored) != [
            "capacity",
            "counts",
            "max_item_chars",
            "total",
        ]:
            raise ValueError(f"not a stored top_k state: {_brief(stored)}")
        for name in ("capacity", "max_item_chars"):
            if stored[name] != getattr(self, name):
                raise ValueError(
                    f"stored top_k state has {name} {_brief(stored[name])}, "
                    f"not {getattr(self, name)}"
                )
        total = stored["total"]
        if not _is_count(total, minimum=0):
            raise ValueError(f"stored top_k total must be an int >= 0, got {_brief(total)}")
        pairs = stored["counts"]
        if not isinstance(pairs, list) or len(pairs) > self.capacity:
            raise ValueError(
                f"stored top_k counts must be a list of at most {self.capacity} "
                f"[item, count] pairs, got {_brief(pairs)}"
            )
        counts: dict[str, int] = {}
        for pair in pairs:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_count(pair[1], minimum=1)
            ):
                raise ValueError(
                    f"stored top_k pair must be [item, count >= 1], got {_brief(pair)}"
                )
            item, count = pair
            if self.item(item) != item:
                raise ValueError(f"stored top_k item is longer than allowed: {_brief(item)}")
            if item in counts:
                raise ValueError(f"stored top_k item appears twice: {_brief(item)}")
            counts[item] = count
        if sum(counts.values()) > total:
            raise ValueError(f"stored top_k counts add up to more than the total {total}")
        return TopKState(counts, total)


def _is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."
