"""The laws every aggregator's merge obeys, as one check the property tests share."""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce
from typing import Any


def fold(aggregator: Any, values: list[Any]) -> Any:
    """``values`` added one by one to a fresh state."""
    return reduce(aggregator.add, values, aggregator.initial())


def check_merge_laws(
    aggregator: Any,
    a: list[Any],
    b: list[Any],
    c: list[Any],
    same: Callable[[Any, Any], bool] = operator.eq,
) -> None:
    """Associative, commutative, the initial state is neutral, and splitting a stream
    anywhere and merging the parts gives what adding it all in order gives."""
    x, y, z = fold(aggregator, a), fold(aggregator, b), fold(aggregator, c)
    merge = aggregator.merge
    assert same(merge(merge(x, y), z), merge(x, merge(y, z))), "associative"
    assert same(merge(x, y), merge(y, x)), "commutative"
    assert merge(x, aggregator.initial()) == x, "initial is neutral"
    assert same(merge(x, y), fold(aggregator, a + b)), "split and merged = added in order"
