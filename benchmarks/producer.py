"""``make bench`` (part 4): what it costs to put events into Kinesis, four ways, on the
embedded emulator, side by side in one run.

- a naive loop of PutRecord calls, one event each;
- a plain loop of PutRecords calls, 500 events each;
- shardflow's producer without aggregation;
- shardflow's producer with KPL aggregation.

Each way gets a fresh stream (moto slows down as a stream fills) and the same events:
about 200 bytes each, partition keys unique per event. Reported: events per second (on an
emulator: only a rough guide), Kinesis records per event, and PUT payload units (25 KB
each) per million events, against the floor (total bytes / 25 KB).

    python -m benchmarks.producer [--events N] [--shards S]
"""

from __future__ import annotations

import argparse
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shardflow.emulator import EMULATOR_CREDENTIALS, start_in_thread
from shardflow.settings import Settings
from streams.clients import make_clients
from streams.kinesis_producer import KinesisProducer, ProducerConfig
from streams.producer_api import PAYLOAD_UNIT_BYTES

Event = tuple[bytes, str]


def events(count: int) -> list[Event]:
    """About 200-byte page views with unique event ids as partition keys."""
    out = []
    for n in range(count):
        key = f"e{n:09d}"
        body = {
            "event_id": key,
            "ts": 1_795_773_600_000 + n,
            "page": f"/products/{n % 1000:04d}",
            "user_id": f"user-{n % 10_000:05d}",
            "latency_ms": 12.5 + n % 300,
            "value": round((n % 97) * 1.25, 2),
            "pad": "x" * 48,
        }
        out.append((orjson.dumps(body), key))
    return out


@dataclass
class Outcome:
    name: str
    events: int
    seconds: float
    kinesis_records: int
    payload_units: int

    def line(self, floor_per_million: float) -> str:
        per_million = self.payload_units / self.events * 1e6
        return (
            f"  {self.name:<34} {self.events / self.seconds:>9,.0f} events/s  "
            f"{self.kinesis_records / self.events:>7.4f} records/event  "
            f"{per_million:>10,.0f} PUT units/M events "
            f"({per_million / floor_per_million:.2f}x floor)"
        )


def _units(size: int) -> int:
    return math.ceil(size / PAYLOAD_UNIT_BYTES)


NAIVE_EVENTS = 2_000
"""One call an event is slow on the emulator: the naive loop sends the first 2,000 only
(its records and units per event are the same whatever the count)."""


def naive_put_record(kinesis: Any, stream: str, batch: Sequence[Event]) -> tuple[int, int]:
    units = 0
    for data, key in batch:
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
        units += _units(len(data) + len(key))
    return len(batch), units


def plain_put_records(kinesis: Any, stream: str, batch: Sequence[Event]) -> tuple[int, int]:
    """500 a call, resending failed entries (none fail on the emulator)."""
    units = 0
    for start in range(0, len(batch), 500):
        chunk = batch[start : start + 500]
        pending = [{"Data": data, "PartitionKey": key} for data, key in chunk]
        while pending:
            response = kinesis.put_records(StreamName=stream, Records=pending)
            pending = [
                entry
                for entry, result in zip(pending, response["Records"], strict=True)
                if "ErrorCode" in result
            ]
        units += sum(_units(len(data) + len(key)) for data, key in chunk)
    return len(batch), units


def with_producer(aggregate: bool) -> Callable[[Any, str, Sequence[Event]], tuple[int, int]]:
    def run(kinesis: Any, stream: str, batch: Sequence[Event]) -> tuple[int, int]:
        config = ProducerConfig(aggregate=aggregate)
        with KinesisProducer(kinesis, stream, config) as producer:
            futures = [producer.put(data, key) for data, key in batch]
        for future in futures:
            future.result()
        return producer.stats.kinesis_records, producer.stats.payload_units

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)

    batch = events(args.events)
    total = sum(len(data) + len(key) for data, key in batch)
    floor = math.ceil(total / PAYLOAD_UNIT_BYTES)
    print(
        f"{len(batch):,} events, {total / len(batch):.0f} bytes each with their partition key; "
        f"floor {floor:,} PUT units ({floor / len(batch) * 1e6:,.0f} per million events), "
        f"{args.shards} shards, on the embedded emulator (moto)"
    )
    server, url = start_in_thread()
    try:
        settings = Settings(
            endpoint_url=url, region="us-east-1", static_credentials=EMULATOR_CREDENTIALS
        )
        kinesis = make_clients(settings).kinesis
        ways: list[tuple[str, Callable[[Any, str, Sequence[Event]], tuple[int, int]]]] = [
            ("naive PutRecord loop", naive_put_record),
            ("PutRecords loop (500 a call)", plain_put_records),
            ("shardflow producer", with_producer(aggregate=False)),
            ("shardflow producer, --aggregate", with_producer(aggregate=True)),
        ]
        outcomes = []
        for name, way in ways:
            stream = f"bench-{uuid.uuid4().hex[:8]}"
            kinesis.create_stream(StreamName=stream, ShardCount=args.shards)
            kinesis.get_waiter("stream_exists").wait(StreamName=stream)
            sent = batch[:NAIVE_EVENTS] if way is naive_put_record else batch
            started = time.perf_counter()
            records, units = way(kinesis, stream, sent)
            seconds = time.perf_counter() - started
            outcomes.append(Outcome(name, len(sent), seconds, records, units))
            kinesis.delete_stream(StreamName=stream)
        floor_per_million = total / PAYLOAD_UNIT_BYTES / len(batch) * 1e6
        for outcome in outcomes:
            print(outcome.line(floor_per_million))
        aggregated = outcomes[-1]
        ratio = aggregated.payload_units / aggregated.events * 1e6 / floor_per_million
        print(
            f"goal with aggregation: PUT units within 1.1x of the floor ({ratio:.2f}x) and at "
            f"least 20x fewer Kinesis records than events "
            f"({aggregated.events / aggregated.kinesis_records:.0f}x)"
        )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
