"""The ``shardflow`` command line's arguments: every sub-command, its options and their
checks (design.md section 8: a contract, keep it as written). shardflow/cli.py runs them."""

from __future__ import annotations

import argparse
import math

from shardflow import emulator as emulator_module
from shardflow import query_command, times
from shardflow.output import FORMATS
from shardflow.resources import DEFAULT_SHARDS


def parse_time(text: str) -> int:
    """Epoch milliseconds from ``1795773600000``, ``2026-11-27T10:00:00Z``, ``now`` or a
    time ago (``15m``): :func:`shardflow.times.parse_time`."""
    try:
        return times.parse_time(text)
    except times.BadTime as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    produce.add_argument(
        "--aggregate",
        action="store_true",
        help="pack events into KPL aggregates, one shard's events each (fewer records and "
        "PUT payload units; readers must deaggregate: shardflow, the KCL and Lambda do)",
    )
    produce.add_argument(
        "--ordered",
        action="store_true",
        help="keep each partition key's events in order, even through retries (slower)",
    )
    produce.add_argument(
        "--failures",
        default="produce-failures.jsonl",
        metavar="PATH",
        help="where events that could not be sent are written, with the reason "
        "(default produce-failures.jsonl; only written when something failed)",
    )

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
    run.add_argument(
        "--runner",
        choices=("embedded", "kcl"),
        default="embedded",
        help="embedded: this process reads every shard (default); kcl: the Kinesis Client "
        "Library's MultiLangDaemon spreads the shards over every worker started this way "
        "(needs Java and the kcl extra)",
    )
    run.add_argument(
        "--kcl-application",
        metavar="NAME",
        help="with --runner kcl: the KCL application, which names its lease table "
        "(default: shardflow-<stream>-<table>-<pipelines>)",
    )
    run.add_argument(
        "--kcl-properties",
        metavar="PATH",
        help="with --runner kcl: write the daemon's properties here (and keep them) "
        "instead of in a temporary folder",
    )
    run.add_argument(
        "--kcl-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --runner kcl: set or override a MultiLangDaemon property "
        "(e.g. failoverTimeMillis=5000); repeatable",
    )

    query_command.add_arguments(commands, parse_time, positive_float)

    dead = commands.add_parser(
        "dead-letters",
        help="list what is in the dead-letter queue (removes nothing), or --redrive it",
    )
    dead.add_argument(
        "--reason",
        choices=("invalid", "late"),
        help="only letters of this reason (--redrive: invalid, the only one it takes)",
    )
    dead.add_argument(
        "--limit",
        type=positive_int,
        help="at most N (default 100; with --redrive, every letter)",
    )
    dead.add_argument("--format", choices=("table", "json"), default="table")
    dead.add_argument(
        "--redrive",
        action="store_true",
        help="send a pipeline's invalid letters back through it (after a schema or pipeline "
        "fix): those it now accepts, and whose windows are still open, are put into its "
        "stream, for it alone, and removed from the queue once Kinesis has them; the others "
        "stay. Exit 0: all handled; 1: some left; 2: refused",
    )
    dead.add_argument(
        "--pipeline",
        help="with --redrive: whose letters (default: the one pipeline using the queue)",
    )

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
    demo.add_argument(
        "--dashboard-port",
        type=int,
        default=8081,
        help="port of the live dashboard on 127.0.0.1 (default 8081, or any free one if "
        "taken; 0: any free)",
    )
    demo.add_argument("--no-dashboard", action="store_true", help="no dashboard, only the table")

    # `shardflow ingest` (shardflow/ingest.py): HTTP events into Kinesis.
    ingest = commands.add_parser("ingest", help="HTTP endpoint that sends events into Kinesis")
    ingest.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ingest.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    ingest.add_argument(
        "--pipeline",
        default="page-views",
        help="pipeline of POST /v1/events (default page-views); "
        "POST /v1/pipelines/NAME/events names another",
    )
    ingest.add_argument(
        "--partition-key",
        default="event_id",
        metavar="FIELD",
        help="event field used as partition key (default event_id)",
    )

    # `shardflow serve` (shardflow/serve.py): the query API and the dashboard.
    serve = commands.add_parser(
        "serve", help="read-only HTTP API over the aggregates, and the live dashboard"
    )
    serve.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="default: all")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8081, help="port (default 8081; 0: any free)")
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        help="require Authorization: Bearer <the file's first line> on /api/ "
        "(or set SHARDFLOW_SERVE_TOKEN)",
    )
    return parser
