"""Synthetic page-view events for the demo, the tests and ``produce --synthetic``."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

PAGES = ("/home", "/search", "/product", "/cart", "/checkout", "/account", "/help", "/blog")


def synthetic_page_views(
    count: int | None,
    now_ms: Callable[[], int],
    seed: int = 7,
    users: int = 500,
    jitter_ms: int = 3_000,
    late_fraction: float = 0.0,
    invalid_fraction: float = 0.0,
) -> Iterator[dict[str, Any] | bytes]:
    """Page views stamped close to ``now_ms()`` (out of order by up to ``jitter_ms``).

    A ``late_fraction`` of them are stamped two minutes back (late for page-views), and an
    ``invalid_fraction`` are broken (bytes that are not a valid event). ``count=None``
    generates forever.
    """
    rng = random.Random(seed)
    index = 0
    while count is None or index < count:
        index += 1
        roll = rng.random()
        if roll < invalid_fraction:
            yield rng.choice(
                [b"{not json", b'{"event_id": "x"}', b'{"event_id": 1, "ts": 0, "page": ""}']
            )
            continue
        ts = now_ms() - rng.randrange(jitter_ms + 1)
        if roll < invalid_fraction + late_fraction:
            ts -= 120_000
        event: dict[str, Any] = {
            "event_id": f"e{seed}-{index}",
            "ts": ts,
            "user_id": f"u{rng.randrange(users)}",
            "page": rng.choice(PAGES),
            "latency_ms": round(rng.lognormvariate(4.0, 0.6), 1),
        }
        if rng.random() < 0.1:
            event["value"] = round(rng.uniform(5, 200), 2)
        yield event
