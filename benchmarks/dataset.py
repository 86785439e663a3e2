"""The benchmark's page views: about 190 bytes each, out of order by up to 5 s, 1,000 pages,
10,000 users, 10% ISO-8601 timestamps. Deterministic for a given seed."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson

BASE_MS = 1_795_000_000_000


def page_view_lines(count: int, seed: int = 1, events_per_second: int = 1_000) -> list[bytes]:
    rng = random.Random(seed)
    step = 1000 / events_per_second
    lines = []
    for index in range(count):
        ts = BASE_MS + int(index * step) - rng.randrange(5_000)
        event: dict[str, object] = {
            "event_id": f"evt-{seed}-{index:09d}",
            "ts": ts,
            "user_id": f"user-{rng.randrange(10_000):05d}",
            "page": f"/catalog/section-{rng.randrange(1_000):04d}/item",
            "latency_ms": round(rng.lognormvariate(4.5, 0.7), 2),
            "value": round(rng.uniform(0.5, 250.0), 2),
            "referrer": "https://www.example.com/landing",
        }
        if rng.random() < 0.1:
            iso = datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat(timespec="milliseconds")
            event["ts"] = iso.replace("+00:00", "Z")
        lines.append(orjson.dumps(event))
    return lines
