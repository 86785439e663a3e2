"""The record processor's process: what the MultiLangDaemon starts for each leased shard.

``python -m streams.kcl_child --config PATH`` reads the configuration the KCL runner
wrote (pipelines, settings, the stream's identity, timings), builds the stores and sinks,
and serves the daemon's protocol on stdin/stdout. Its stdout belongs to the protocol: the
process's file descriptor 1 is pointed at stderr, so that nothing printed by accident can
break a message; logs go to stderr, which the daemon copies into its own log.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from processors.pipeline import Pipeline
from processors.pipelines import get_pipeline
from processors.sinks.dynamodb_store import DynamoPartialStore
from processors.sinks.sqs_dead_letters import SqsDeadLetters
from shardflow.settings import Settings
from shardflow.wiring import make_store, queue_url
from streams.kcl_processor import KclShardProcessor, ProcessorOptions
from streams.kcl_properties import settings_from_json
from streams.kcl_protocol import serve
from streams.shard_map import list_all_shards

if TYPE_CHECKING:
    from streams.clients import AwsClients


def sinks_for(
    clients: AwsClients, settings: Settings, pipelines: Sequence[Pipeline[Any]]
) -> tuple[dict[str, DynamoPartialStore], dict[str, SqsDeadLetters]]:
    """Each pipeline's results store and dead-letter sink (one per table and queue)."""
    stores: dict[str, DynamoPartialStore] = {}
    letters: dict[str, SqsDeadLetters] = {}
    by_table: dict[str, DynamoPartialStore] = {}
    by_queue: dict[str, SqsDeadLetters] = {}
    for pipeline in pipelines:
        table = settings.table_for(pipeline.sinks.results_table)
        if table not in by_table:
            sharing = [p for p in pipelines if settings.table_for(p.sinks.results_table) == table]
            by_table[table] = make_store(clients, settings, pipeline, sharing)
        stores[pipeline.name] = by_table[table]
        queue = settings.dead_letter_queue_for(pipeline.sinks.dead_letter_queue)
        if queue not in by_queue:
            by_queue[queue] = SqsDeadLetters(
                clients.sqs, queue_url(clients, queue), settings.stream
            )
        letters[pipeline.name] = by_queue[queue]
    return stores, letters


def children_lister(clients: AwsClients, stream: str) -> Any:
    def children(shard_id: str) -> list[str]:
        return [
            shard["ShardId"]
            for shard in list_all_shards(clients.kinesis, stream)
            if shard_id in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
        ]

    return children


def run(config: dict[str, Any], protocol_in: IO[bytes], protocol_out: IO[bytes]) -> int:
    from streams.clients import make_clients  # noqa: PLC0415 (boto3 only once configured)

    settings = settings_from_json(config["settings"])
    pipelines = [get_pipeline(name) for name in config["pipelines"]]
    clients = make_clients(settings)
    stores, letters = sinks_for(clients, settings, pipelines)
    options = replace(
        ProcessorOptions(),
        flush_interval=float(config.get("flush_interval", 1.0)),
        fence_grace=float(config.get("fence_grace", 60.0)),
    )
    processor = KclShardProcessor(
        pipelines,
        stores,
        letters,
        config["stream_identity"],
        children_lister(clients, settings.stream),
        options,
    )
    return serve(processor, protocol_in, protocol_out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.kcl_child")
    parser.add_argument(
        "--config", required=True, help="JSON written by `shardflow run --runner kcl`"
    )
    args = parser.parse_args(argv)
    config = orjson.loads(Path(args.config).read_bytes())
    # A stop signal sent to the whole process group (Ctrl-C, `timeout`, systemd) is the
    # daemon's to handle: it asks each processor to flush (shutdownRequested), and the
    # end of stdin ends this process. Dying here would leave that shutdown hanging.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol keeps the real stdout; anything else printing to fd 1 lands on stderr.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(
        # The daemon logs every line a processor writes to stderr as an error, and
        # prints it once more: only warnings and errors, unless -v.
        level=logging.INFO if config.get("verbose") else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return run(config, sys.stdin.buffer, protocol_out)
    except Exception:
        logging.getLogger("shardflow.kcl").exception("record processor could not start")
        return 1


if __name__ == "__main__":
    sys.exit(main())
