"""``shardflow run --runner kcl``: the KCL MultiLangDaemon with shardflow's record processor.

The launcher checks the resources, registers the stream's open shards in the results
table (so that no window is reported final before every shard can hold it open, even
shards no worker has leased yet), writes the daemon's properties, logback configuration
and the processor's configuration, starts ``java ... MultiLangDaemon``, and runs the
finalizers (final rows and alerts) on this worker while it waits. SIGTERM or Ctrl-C is
passed to the daemon, which asks every record processor to flush and checkpoint
(``shutdownRequested``) before it lets its leases go; a second one kills it. On Linux the
daemon is also killed when the launcher dies (``PR_SET_PDEATHSIG``), so ``kill -9`` of a
worker takes its daemon and record processors with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from processors.finalizer import Finalizer, FinalizeReport
from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
from processors.windowing.results import final_frontier
from shardflow.settings import Settings
from shardflow.wiring import make_alert_sink, stream_identity
from streams.finalize_schedule import FinalizeSchedule
from streams.kcl_child import sinks_for
from streams.kcl_properties import (
    MAIN_CLASS,
    KclOptions,
    build_properties,
    cbor_disabled,
    logback_xml,
    render_properties,
    settings_to_json,
)
from streams.shard_map import list_all_shards

if TYPE_CHECKING:
    from streams.clients import AwsClients

log = logging.getLogger("shardflow.kcl")

PR_SET_PDEATHSIG = 1
STOP_MARGIN_S = 15.0
"""How long past its own shutdown grace the daemon may take to stop before it is killed."""


class KclUnavailable(RuntimeError):
    """amazon-kclpy (and its jars) or Java is missing."""


def jars_dir() -> Path:
    """Where amazon-kclpy put the KCL's jars when it installed."""
    spec = importlib.util.find_spec("amazon_kclpy")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise KclUnavailable(
            "the KCL runner needs amazon-kclpy: pip install 'shardflow[kcl]' "
            "(it downloads the KCL's jars from Maven Central)"
        )
    jars = Path(locations[0]) / "jars"
    if not any(jars.glob("amazon-kinesis-client-multilang-*.jar")):
        raise KclUnavailable(f"amazon-kclpy is installed without its jars ({jars}): reinstall it")
    return jars


def check_java(java: str) -> str:
    """The Java executable's path, or an error saying what to install, checked before the
    launcher touches AWS (registering shards, writing files)."""
    found = shutil.which(java)
    if found is None:
        raise KclUnavailable(
            f"the KCL runner needs Java (17 is what it is tested with), and {java!r} is not "
            "on PATH: install a JDK or JRE 17 and put its bin/ on PATH"
        )
    return found


def daemon_command(
    java: str, jars: Path, properties: Path, logback: Path, cbor_off: bool
) -> list[str]:
    command = [java]
    if cbor_off:
        command.append("-Daws.cborEnabled=false")
    classpath = os.pathsep.join([str(jars / "*"), str(properties.parent)])
    return [
        *command,
        "-cp",
        classpath,
        MAIN_CLASS,
        "--properties-file",
        str(properties),
        "--log-configuration",
        str(logback),
    ]


def register_open_shards(
    kinesis: Any,
    stream: str,
    stores: Mapping[str, PartialStore],
    pipelines: Sequence[Pipeline[Any]],
    identity: str,
) -> int:
    """Register every shard a worker may lease, before any record is read, as the embedded
    runner does: until a shard is read, it holds windows open. Children whose parents are
    still being read are registered by their parents, at their ends."""
    shards = list_all_shards(kinesis, stream)
    listed = {shard["ShardId"] for shard in shards}
    registered = 0
    for pipeline in pipelines:
        store = stores[pipeline.name]
        progress = {p.shard_id: p for p in store.read_progress(pipeline.name)}
        for shard in shards:
            parents = [
                p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
            ]
            if any(p in listed and not (p in progress and progress[p].ended) for p in parents):
                continue
            if shard["ShardId"] in progress:
                continue
            floor = (
                final_frontier(list(progress.values()), pipeline.allowed_lateness_ms)
                if parents
                else None
            )
            progress[shard["ShardId"]] = store.register_shard(
                pipeline.name, identity, shard["ShardId"], floor
            )
            registered += 1
    return registered


def _die_with_parent() -> None:
    """In the daemon, before exec: be killed when the launcher dies (Linux only)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class KclRunner:
    """One KCL worker: the daemon, its record processors, and this worker's finalizers."""

    clients: AwsClients
    settings: Settings
    pipelines: Sequence[Pipeline[Any]]
    options: KclOptions
    flush_interval: float = 1.0
    finalize_interval: float = 5.0
    verbose: bool = False

    def __post_init__(self) -> None:
        self.finalized = FinalizeReport()
        self.exit_code: int | None = None

    def _write_files(self, workdir: Path, identity: str) -> tuple[Path, Path]:
        names = [p.name for p in self.pipelines]
        properties = Path(self.options.properties_path or workdir / "shardflow.properties")
        properties = properties.resolve()
        if properties.is_dir():
            raise ValueError(f"--kcl-properties {properties} is a folder: name a file in it")
        stem = properties.with_suffix("")
        config_path = stem.with_name(stem.name + ".processor.json")
        wrapper = stem.with_name(stem.name + ".processor")
        logback = stem.with_name(stem.name + ".logback.xml")
        config = {
            "pipelines": names,
            "settings": settings_to_json(self.settings),
            "stream_identity": identity,
            "flush_interval": self.flush_interval,
            "fence_grace": max(60.0, 3 * self.options.failover_ms / 1000),
            "verbose": self.verbose,
        }
        region = self.clients.kinesis.meta.region_name
        # Everything the daemon cannot take is refused before any file is written.
        props = build_properties(self.settings, self.options, names, str(wrapper), region)
        rendered = render_properties(props)
        config_path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
        wrapper.write_text(
            "#!/bin/sh\n# The record processor the daemon starts for each leased shard.\n"
            f"exec {shlex.quote(sys.executable)} -m streams.kcl_child "
            f"--config {shlex.quote(str(config_path))}\n"
        )
        wrapper.chmod(0o755)
        logback.write_text(logback_xml(self.verbose))
        properties.write_text(rendered)
        log.info(
            "KCL application %s (lease table), properties in %s",
            props["applicationName"],
            properties,
        )
        return properties, logback

    def run(self, stop: threading.Event) -> int:
        """Run the daemon until it exits or ``stop`` is set; returns its exit code (0 when
        it stopped because it was asked to)."""
        jars = jars_dir()
        identity = stream_identity(self.clients, self.settings.stream)
        stores, _ = sinks_for(self.clients, self.settings, self.pipelines)
        count = register_open_shards(
            self.clients.kinesis, self.settings.stream, stores, self.pipelines, identity
        )
        log.info("stream %s: %d shards newly registered", self.settings.stream, count)
        finalizers = [
            Finalizer(
                p,
                stores[p.name],
                make_alert_sink(self.clients, self.settings, p) if p.sinks.alerts else None,
            )
            for p in self.pipelines
        ]
        schedule = FinalizeSchedule(finalizers, self.finalize_interval)
        with tempfile.TemporaryDirectory(prefix="shardflow-kcl-") as workdir:
            properties, logback = self._write_files(Path(workdir), identity)
            command = daemon_command(
                self.options.java, jars, properties, logback, cbor_disabled(self.settings)
            )
            code = self._supervise(command, schedule, stop)
        self.finalized = schedule.totals
        if code == 0:
            schedule.run_all()
            self.finalized = schedule.totals
        return code

    def _supervise(
        self, command: list[str], schedule: FinalizeSchedule, stop: threading.Event
    ) -> int:
        env = dict(os.environ)
        credentials = self.settings.static_credentials
        if credentials:
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = credentials
        log.debug("starting %s", " ".join(command))
        try:
            daemon = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        except FileNotFoundError as exc:
            raise KclUnavailable(f"cannot start Java ({self.options.java}): {exc}") from exc
        asked: float | None = None
        grace = self.options.shutdown_grace_ms / 1000 + STOP_MARGIN_S
        try:
            while daemon.poll() is None:
                now = time.monotonic()
                if stop.is_set() and asked is None:
                    log.info("stopping the KCL daemon: its processors flush and checkpoint")
                    daemon.send_signal(signal.SIGTERM)
                    asked = now
                if asked is not None and now - asked > grace:
                    # A daemon whose shutdown hook waits on a processor that died can
                    # hang for good (System.exit inside a shutdown hook blocks).
                    log.error("the KCL daemon did not stop within %.0fs: killing it", grace)
                    daemon.kill()
                    daemon.wait()
                    return 1
                schedule.maybe_run()
                if asked is not None:
                    _wait(daemon, 0.5)
                else:
                    stop.wait(0.5)
        except BaseException:  # a second signal, or anything failing here: no daemon left behind
            daemon.kill()
            daemon.wait()
            raise
        code = daemon.returncode
        if asked is not None and code in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
            return 0
        log.error("the KCL daemon exited with code %s", code)
        return code if code > 0 else 1


def _wait(daemon: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.wait(timeout)
