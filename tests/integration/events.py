"""A known set of page-view lines for the end-to-end tests: mostly in order, with
malformed events and events stamped minutes in the past (late once their shard has moved
on)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

BASE_MS = 1_795_000_000_000 - 1_795_000_000_000 % 60_000  # a whole minute in 2026
PAGES = [f"/page/{i}" for i in range(12)]
MALFORMED = [
    b"{not json",
    b"[1, 2, 3]",
    b'{"ts": 1795000000000, "page": "/x"}',
    b'{"event_id": "m", "ts": true, "page": "/x"}',
    b'{"event_id": "m", "ts": "2026-11-27T10:00:00", "page": "/x"}',
    b'{"event_id": "m", "ts": 1795000000000, "page": ""}',
    b'{"event_id": "m", "ts": 1795000000000, "page": "/x", "latency_ms": -1}',
    b'{"event_id": "m", "ts": 1795000000000, "page": "/x", "value": "12"}',
    b"\xff\xfe not utf-8",
]


def page_view_lines(count: int, seed: int, span_ms: int = 300_000) -> list[bytes]:
    """``count`` lines: valid events spread over ``span_ms`` of event time (jitter within
    the lateness), 2% malformed, 2% stamped three minutes back, 10% ISO timestamps."""
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        roll = rng.random()
        if roll < 0.02:
            lines.append(rng.choice(MALFORMED))
            continue
        ts = BASE_MS + span_ms * index // count + rng.randrange(-3_000, 3_000)
        if roll < 0.04:
            ts -= 180_000
        event: dict[str, object] = {
            "event_id": f"{seed}-{index}",
            "ts": ts,
            "user_id": f"u{rng.randrange(300)}",
            "page": rng.choice(PAGES),
        }
        if rng.random() < 0.1:
            iso = datetime.fromtimestamp(ts / 1000, tz=UTC).isoformat()
            event["ts"] = iso.replace("+00:00", "Z")
        if rng.random() < 0.9:
            event["latency_ms"] = round(rng.uniform(1, 900), 1)
        if rng.random() < 0.3:
            event["value"] = round(rng.uniform(0.5, 250), 2)
        lines.append(json.dumps(event).encode())
    return lines
