"""``shardflow run --runner kcl``: the options checked before anything starts, then this
worker's share of the shards under the KCL's MultiLangDaemon (streams/kcl_launcher.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from processors.pipeline import Pipeline
from shardflow.settings import Settings

if TYPE_CHECKING:
    from streams.clients import AwsClients

log = logging.getLogger("shardflow")


def run_kcl(
    args: argparse.Namespace,
    settings: Settings,
    pipelines: list[Pipeline[Any]],
    make_clients: Callable[[Settings], AwsClients],
    stop_on_signals: Callable[[], threading.Event],
) -> int:
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
    stop = stop_on_signals()
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
