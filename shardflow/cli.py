"""The ``shardflow`` command line (design.md section 8: a contract, keep it as written)."""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.pipeline import Pipeline
from processors.pipelines import PIPELINES, UnknownPipeline, get_pipeline
from processors.query_pages import QueryError
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.sinks.sqs_dead_letters import DeadLetterDeliveryError
from processors.windowing.codec import IncompatibleState
from shardflow import emulator as emulator_module
from shardflow import query_command, times
from shardflow.input import file_records, open_input, synthetic_records
from shardflow.output import FORMATS, reason_counts, render
from shardflow.replay import replay_file
from shardflow.resources import DEFAULT_SHARDS
from shardflow.settings import Settings
from shardflow.wiring import (
    MixedStreams,
    default_pipelines,
    ensure_for,
    make_runner,
    make_store,
    queue_url,
    stream_of,
)
from streams.aws_errors import ResourceMissing, describe
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


def _stop_on_signals(
    message: str | None = "stopping: finishing the current flush (press Ctrl-C again to abort)",
) -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        if message:
            log.info(message)
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
    failures_dir = os.path.dirname(os.path.abspath(args.failures))
    if not os.access(failures_dir, os.W_OK):
        # Checked first: events that fail must have somewhere to go.
        print(
            f"shardflow produce: cannot write the failure file {args.failures} "
            f"({failures_dir} is not a writable directory)",
            file=sys.stderr,
        )
        return 2
    from shardflow.produce import ProduceReport, produce  # noqa: PLC0415
    from streams.kinesis_producer import KinesisProducer, ProducerConfig  # noqa: PLC0415

    clients = make_clients(settings)
    config = ProducerConfig(aggregate=args.aggregate, ordered=args.ordered)
    interactive = sys.stderr.isatty()

    def progress(report: ProduceReport) -> None:
        if interactive:
            rate = report.sent / report.elapsed if report.elapsed else 0.0
            print(
                f"\r{report.read} read, {report.sent} sent, {len(report.failures)} failed, "
                f"{rate:,.0f} events/s",
                end="",
                file=sys.stderr,
            )

    with KinesisProducer(clients.kinesis, settings.stream, config) as producer:
        if args.synthetic is not None:
            records = synthetic_records(args.synthetic, args.seed, args.partition_key)
            report = produce(producer, records, args.rate, progress)
        else:
            with open_input(args.file) as stream:
                records = file_records(stream, args.partition_key)
                report = produce(producer, records, args.rate, progress)
    if interactive:
        print(file=sys.stderr)
    for line in report.lines():
        print(line)
    if not report.failures:
        return 0
    with open(args.failures, "wb") as out:
        report.write_failures(out)
    for failure in report.failures[:10]:
        print(f"line {failure.ref}: not sent: {failure.reason}", file=sys.stderr)
    more = len(report.failures) - 10
    print(
        f"shardflow produce: {len(report.failures)} events not sent"
        + (f" ({more} more not shown)" if more > 0 else "")
        + f"; each is in {args.failures} with its reason",
        file=sys.stderr,
    )
    return 1


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    names = args.pipelines or default_pipelines(settings, list(PIPELINES.values()))
    pipelines = [get_pipeline(name) for name in names]
    try:
        settings = replace(settings, stream=stream_of(settings, pipelines))
    except MixedStreams as exc:
        print(f"shardflow run: {exc}", file=sys.stderr)
        return 2
    if args.runner == "kcl":
        return _run_kcl(args, settings, pipelines)
    if args.kcl_application or args.kcl_properties or args.kcl_property:
        print("shardflow run: the --kcl-* options go with --runner kcl", file=sys.stderr)
        return 2
    clients = make_clients(settings)
    runner = make_runner(
        clients, settings, pipelines, RunnerOptions(flush_interval=args.flush_interval)
    )
    stop = _stop_on_signals()
    log.info("running %s on stream %s", ", ".join(names), settings.stream)
    stats = runner.run(stop, until_idle=args.until_idle)
    finalized = runner.finalized
    print(
        f"processed {stats.records} records, dead letters {reason_counts(stats.dead_letters)}, "
        f"{stats.rows_written} row writes in {stats.flushes} flushes, "
        f"{finalized.final_rows} final rows, {finalized.alerts_sent} alerts sent"
    )
    return 0


def _run_kcl(args: argparse.Namespace, settings: Settings, pipelines: list[Pipeline[Any]]) -> int:
    """``run --runner kcl``: this worker's share of the shards, under the KCL."""
    if args.until_idle is not None:
        print(
            "shardflow run: --until-idle is for the embedded runner; "
            "a KCL worker runs until it is stopped (SIGTERM)",
            file=sys.stderr,
        )
        return 2
    from streams.kcl_properties import owned_property_error  # noqa: PLC0415

    overrides: dict[str, str] = {}
    for pair in args.kcl_property:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            print(f"shardflow run: --kcl-property wants KEY=VALUE, got {pair!r}", file=sys.stderr)
            return 2
        refused = owned_property_error(key.strip())
        if refused:
            print(f"shardflow run: {refused}", file=sys.stderr)
            return 2
        overrides[key.strip()] = value.strip()
    from streams.kcl_launcher import KclRunner, KclUnavailable, check_java  # noqa: PLC0415
    from streams.kcl_properties import kcl_options  # noqa: PLC0415

    try:
        options = kcl_options(args.kcl_application, args.kcl_properties, overrides)
        check_java(options.java)
    except (ValueError, KclUnavailable) as exc:
        print(f"shardflow run: {exc}", file=sys.stderr)
        return 2
    runner = KclRunner(
        make_clients(settings),
        settings,
        pipelines,
        options,
        flush_interval=args.flush_interval,
        verbose=args.verbose,
    )
    stop = _stop_on_signals()
    log.info(
        "running %s on stream %s under the KCL",
        ", ".join(p.name for p in pipelines),
        settings.stream,
    )
    try:
        code = runner.run(stop)
    except (KclUnavailable, ValueError) as exc:
        print(f"shardflow run: {exc}", file=sys.stderr)
        return 1
    finalized = runner.finalized
    print(
        f"KCL worker stopped (exit {code}), {finalized.final_rows} final rows, "
        f"{finalized.alerts_sent} alerts sent by this worker"
    )
    return code


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = get_pipeline(args.pipeline)
    store = make_store(make_clients(settings), settings, pipeline)
    stop = _stop_on_signals(None) if args.follow else threading.Event()
    return query_command.run_query(args, store, pipeline, stop)


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = get_pipeline(args.pipeline)
    query_command.check_top_arguments(pipeline, args)
    store = make_store(make_clients(settings), settings, pipeline)
    return query_command.run_top(args, store, pipeline)


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    if args.redrive:
        from shardflow.redrive_command import NoPipeline, choose_pipeline, run_redrive  # noqa: PLC0415

        try:
            pipeline = choose_pipeline(settings, list(PIPELINES.values()), args.pipeline)
        except NoPipeline as exc:
            print(f"shardflow dead-letters: {exc}", file=sys.stderr)
            return 2
        return run_redrive(
            make_clients(settings),
            settings,
            pipeline,
            reason=args.reason or "invalid",
            limit=args.limit,
        )
    if args.pipeline:
        print("shardflow dead-letters: --pipeline goes with --redrive", file=sys.stderr)
        return 2
    from shardflow.dead_letter_list import (  # noqa: PLC0415
        list_dead_letters,
        queue_depth,
        render_letters,
    )

    clients = make_clients(settings)
    url = queue_url(clients, settings.dead_letter_queue)
    letters = list_dead_letters(clients.sqs, url, args.reason, args.limit or 100)
    print(render_letters(letters, args.format))
    print(
        f"{len(letters)} shown; the queue {settings.dead_letter_queue} reports about "
        f"{queue_depth(clients.sqs, url)} messages",
        file=sys.stderr,
    )
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

    port = None if args.no_dashboard else args.dashboard_port
    return run_demo(settings, args.duration, args.shards, args.rate, _stop_on_signals(), port)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Starlette and uvicorn load for this command only.
    from shardflow.serve import run_serve  # noqa: PLC0415
    from shardflow.serve_setup import BadToken, read_token, readers_for  # noqa: PLC0415

    names = args.pipelines or list(PIPELINES)
    pipelines = [get_pipeline(name) for name in names]  # unknown names exit 2
    try:
        token = read_token(args.token_file, os.environ)
    except BadToken as exc:
        print(f"shardflow serve: {exc}", file=sys.stderr)
        return 2
    readers = readers_for(make_clients(settings), settings, pipelines)
    return run_serve(readers, args.host, args.port, token, verbose=args.verbose)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    # Starlette and uvicorn load for this command only.
    from shardflow.ingest import IngestOptions, ProducerUnavailable, run_ingest  # noqa: PLC0415

    get_pipeline(args.pipeline)  # an unknown name exits 2, listing the known ones
    options = IngestOptions(default_pipeline=args.pipeline, partition_key=args.partition_key)
    try:
        return run_ingest(
            settings,
            make_clients(settings),
            PIPELINES,
            args.host,
            args.port,
            options,
            verbose=args.verbose,
        )
    except ProducerUnavailable as exc:
        print(f"shardflow ingest: {exc}", file=sys.stderr)
        return 1


COMMANDS = {
    "emulator": cmd_emulator,
    "up": cmd_up,
    "produce": cmd_produce,
    "run": cmd_run,
    "query": cmd_query,
    "top": cmd_top,
    "replay": cmd_replay,
    "dead-letters": cmd_dead_letters,
    "demo": cmd_demo,
    "ingest": cmd_ingest,
    "serve": cmd_serve,
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


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        pass


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
    except (UnknownPipeline, QueryError) as exc:
        print(f"shardflow {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`shardflow query ... | head`): stop quietly, as other
        # command-line tools do, and keep the interpreter's final flush from failing too.
        _silence_stdout()
        return 141
    except EXPECTED_ERRORS as exc:
        print(f"shardflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"shardflow {args.command}: {describe(exc) or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shardflow {args.command}: interrupted", file=sys.stderr)
        return 130
