"""The ``shardflow`` command line (design.md section 8: a contract, keep it as written)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from processors.pipelines import PIPELINES, UnknownPipeline, get_pipeline
from processors.query_pages import QueryError
from processors.sinks.ports import StaleWrite, StreamMismatch
from processors.sinks.sqs_dead_letters import DeadLetterDeliveryError
from processors.windowing.codec import IncompatibleState
from shardflow import emulator as emulator_module
from shardflow import query_command
from shardflow.cli_parser import build_parser
from shardflow.input import file_records, open_input, synthetic_records
from shardflow.kcl_command import run_kcl
from shardflow.output import reason_counts, render
from shardflow.replay import replay_file
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
        return run_kcl(args, settings, pipelines, make_clients, _stop_on_signals)
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
