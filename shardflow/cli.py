"""The ``shardflow`` command line (design.md section 8: a contract, keep it as written)."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from processors.pipelines import PIPELINES, UnknownPipeline, get_pipeline
from processors.query import query_windows
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.sinks.sqs_dead_letters import DeadLetterDeliveryError
from processors.windowing.codec import IncompatibleState
from schemas.errors import InvalidEvent
from schemas.timestamps import parse_iso8601
from shardflow import emulator as emulator_module
from shardflow.input import file_records, open_input, synthetic_records
from shardflow.output import FORMATS, render
from shardflow.replay import replay_file
from shardflow.resources import DEFAULT_SHARDS
from shardflow.settings import Settings
from shardflow.wiring import (
    MixedStreams,
    default_pipelines,
    ensure_for,
    make_runner,
    make_store,
    stream_of,
)
from streams.aws_errors import ResourceMissing, describe
from streams.producer import BatchProducer, ProduceSummary
from streams.runner import RunnerOptions

if TYPE_CHECKING:
    from streams.clients import AwsClients

log = logging.getLogger("shardflow")

GC_THRESHOLD = 10_000


def make_clients(settings: Settings) -> AwsClients:
    """AWS clients, with boto3 imported only by the commands that talk to AWS: it takes a
    third of a second, and ``replay`` and ``--help`` need none of it."""
    from streams.clients import make_clients as build  # noqa: PLC0415

    return build(settings)


def parse_time(text: str) -> int:
    """Epoch milliseconds from ``1764237600000`` or ``2026-11-27T10:00:00Z``."""
    if re.fullmatch(r"-?[0-9]+", text.strip()):
        return int(text)
    try:
        return parse_iso8601(text, "time")
    except InvalidEvent as exc:
        raise argparse.ArgumentTypeError(f"{exc}; use ISO-8601 or epoch milliseconds") from None


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardflow",
        description="Exactly-once windowed aggregation of Kinesis streams into DynamoDB.",
    )
    parser.add_argument(
        "--stream", help="Kinesis stream (default clickstream; env SHARDFLOW_STREAM)"
    )
    parser.add_argument("--table", help="results table (default shardflow-aggregates)")
    parser.add_argument("--dead-letter-queue", help="SQS queue (default shardflow-dead-letters)")
    parser.add_argument("--alert-topic", help="SNS topic (default shardflow-alerts)")
    parser.add_argument("--region", help="AWS region (env AWS_REGION)")
    parser.add_argument(
        "--endpoint-url",
        help="AWS endpoint for every service (env AWS_ENDPOINT_URL); "
        "overrides AWS_ENDPOINT_URL_KINESIS and the other per-service variables",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    emulator = commands.add_parser(
        "emulator", help="embedded AWS emulator (moto) in the foreground"
    )
    emulator.add_argument("--host", default=emulator_module.DEFAULT_HOST)
    emulator.add_argument("--port", type=int, default=emulator_module.DEFAULT_PORT)
    emulator.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)

    up = commands.add_parser("up", help="create every resource the pipelines need (idempotent)")
    up.add_argument(
        "--shards",
        type=positive_int,
        default=DEFAULT_SHARDS,
        help=f"shards for a new stream (default {DEFAULT_SHARDS})",
    )

    produce = commands.add_parser("produce", help="JSON-lines events into the stream")
    produce.add_argument("file", nargs="?", help="JSON-lines file, or - for standard input")
    produce.add_argument(
        "--synthetic", type=positive_int, metavar="N", help="send N synthetic page views"
    )
    produce.add_argument(
        "--rate", type=positive_float, metavar="R", help="at most R events per second"
    )
    produce.add_argument(
        "--partition-key",
        default="event_id",
        metavar="FIELD",
        help="event field used as partition key (default event_id)",
    )
    produce.add_argument("--seed", type=int, default=7, help="seed for --synthetic")

    run = commands.add_parser("run", help="process all shards")
    run.add_argument(
        "pipelines",
        nargs="*",
        metavar="PIPELINE",
        help="default: the pipelines that declare the configured stream as their source, "
        "or else those that read whatever stream is configured (page-views)",
    )
    run.add_argument(
        "--until-idle",
        type=positive_float,
        metavar="SECONDS",
        help="exit 0 once every shard has been quiet this long and all state is durable",
    )
    run.add_argument(
        "--flush-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often effects are made durable and checkpointed (default 1)",
    )

    query = commands.add_parser("query", help="windows of a pipeline, merged across shards")
    query.add_argument("pipeline")
    query.add_argument("--key", help="only this key")
    query.add_argument("--since", type=parse_time, help="windows ending after this time")
    query.add_argument("--until", type=parse_time, help="windows starting before this time")
    query.add_argument("--format", choices=FORMATS, default="table")

    replay = commands.add_parser("replay", help="run a pipeline over a JSON-lines file, in memory")
    replay.add_argument("pipeline")
    replay.add_argument("file", help="JSON-lines file, or - for standard input")
    replay.add_argument("--format", choices=FORMATS, default="table")

    demo = commands.add_parser("demo", help="the whole system on the embedded emulator, live view")
    demo.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop after this long"
    )
    demo.add_argument("--shards", type=positive_int, default=DEFAULT_SHARDS)
    demo.add_argument(
        "--rate", type=positive_float, default=40.0, help="events per second (default 40)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env().with_overrides(
        stream=args.stream,
        table=args.table,
        dead_letter_queue=args.dead_letter_queue,
        alert_topic=args.alert_topic,
        region=args.region,
        endpoint_url=args.endpoint_url,
    )
    if args.endpoint_url:
        # The command line wins over the environment: --endpoint-url is every service's
        # endpoint, whatever AWS_ENDPOINT_URL_KINESIS and the others say.
        settings = replace(settings, service_endpoints={})
    return settings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("stopping: finishing the current flush (press Ctrl-C again to abort)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    return emulator_module.run_foreground(args.host, args.port, args.exit_with_parent)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    clients = make_clients(settings)
    report = ensure_for(clients, settings, args.shards, list(PIPELINES.values()))
    for line in report.lines():
        print(line)
    print(f"stream {settings.stream}: {report.shard_count} open shards, ACTIVE")
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    if (args.file is None) == (args.synthetic is None):
        print("shardflow produce: give a FILE (or - for stdin) or --synthetic N", file=sys.stderr)
        return 2
    if args.file not in (None, "-"):
        with open(args.file, "rb"):
            pass  # a missing or unreadable file is reported before any AWS call
    clients = make_clients(settings)
    producer = BatchProducer(clients.kinesis, settings.stream)
    last_report = [time.monotonic()]

    def progress(summary: ProduceSummary) -> None:
        if sys.stderr.isatty() and time.monotonic() - last_report[0] > 1:
            last_report[0] = time.monotonic()
            print(f"\r{summary.sent} sent, {len(summary.failed)} failed", end="", file=sys.stderr)

    if args.synthetic is not None:
        summary = producer.send(
            synthetic_records(args.synthetic, args.seed, args.partition_key), args.rate, progress
        )
    else:
        with open_input(args.file) as stream:
            summary = producer.send(file_records(stream, args.partition_key), args.rate, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for line in summary.lines():
        print(line)
    for failure in summary.failed:
        print(f"line {failure.ref}: not sent: {failure.reason}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    names = args.pipelines or default_pipelines(settings, list(PIPELINES.values()))
    pipelines = [get_pipeline(name) for name in names]
    try:
        settings = replace(settings, stream=stream_of(settings, pipelines))
    except MixedStreams as exc:
        print(f"shardflow run: {exc}", file=sys.stderr)
        return 2
    clients = make_clients(settings)
    runner = make_runner(
        clients, settings, pipelines, RunnerOptions(flush_interval=args.flush_interval)
    )
    stop = _stop_on_signals()
    log.info("running %s on stream %s", ", ".join(names), settings.stream)
    stats = runner.run(stop, until_idle=args.until_idle)
    print(
        f"processed {stats.records} records, dead letters {stats.dead_letters or 'none'}, "
        f"{stats.rows_written} row writes in {stats.flushes} flushes"
    )
    return 0


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = get_pipeline(args.pipeline)
    store = make_store(make_clients(settings), settings, pipeline)
    results = query_windows(store, pipeline, args.key, args.since, args.until)
    print(render(results, pipeline.aggregate_names, args.format))
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = get_pipeline(args.pipeline)
    with open_input(args.file) as stream:
        outcome = replay_file(pipeline, stream)
    print(render(outcome.results, pipeline.aggregate_names, args.format))
    print(outcome.summary_line(), file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from shardflow.demo import run_demo  # noqa: PLC0415 (the demo's imports are heavier)

    return run_demo(settings, args.duration, args.shards, args.rate, _stop_on_signals())


COMMANDS = {
    "emulator": cmd_emulator,
    "up": cmd_up,
    "produce": cmd_produce,
    "run": cmd_run,
    "query": cmd_query,
    "replay": cmd_replay,
    "demo": cmd_demo,
}

EXPECTED_ERRORS = (
    ResourceMissing,
    StaleWrite,
    StreamMismatch,
    DeadLetterDeliveryError,
    IncompatibleState,
    emulator_module.EmulatorUnavailable,
    OSError,
)


def tune_garbage_collector() -> None:
    """The runner keeps each batch of records alive while it works on it, so the default
    collector threshold (700) triggers collections over and over; the objects from
    imports never die, so they are frozen out of every collection. (`make bench` runs
    under the same setting.)"""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def entry() -> None:
    """The ``shardflow`` command: the process is ours, so the collector is tuned here (not
    in :func:`main`, which tests call in their own process)."""
    tune_garbage_collector()
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args, _settings(args))
    except UnknownPipeline as exc:
        print(f"shardflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except EXPECTED_ERRORS as exc:
        print(f"shardflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"shardflow {args.command}: {describe(exc) or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shardflow {args.command}: interrupted", file=sys.stderr)
        return 130
