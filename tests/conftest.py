"""Fixtures shared by the contract and integration tiers.

The emulator: when ``AWS_ENDPOINT_URL`` is unset, moto's server starts on a free loopback
port for the session; when it is set (LocalStack, a running ``shardflow emulator``), the
tests use it. Every test gets resources with names of its own, so tests never share state
and the suite runs unchanged against LocalStack.

kinesis-local, for the tests that need Kinesis' real shard ends (resharding, the KCL), is
the plugin ``tests/kinesis_local.py``: its fixtures put Kinesis there and the rest on moto.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from shardflow.emulator import EMULATOR_CREDENTIALS, EMULATOR_ENV, start_in_thread
from shardflow.resources import ResourceNames, ResourceReport, ensure_resources
from shardflow.settings import Settings
from streams.clients import AwsClients, make_clients

pytest_plugins = ["tests.kinesis_local"]


@dataclass(frozen=True)
class Emulator:
    url: str
    embedded: bool


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The endpoint every AWS call of the session goes to."""
    url = os.environ.get("AWS_ENDPOINT_URL")
    if url:
        yield Emulator(url, embedded=False)
        return
    server, url = start_in_thread()
    try:
        yield Emulator(url, embedded=True)
    finally:
        server.stop()


@dataclass(frozen=True)
class AwsEnv:
    """One test's resources: settings, clients, and the environment for CLI subprocesses."""

    settings: Settings
    clients: AwsClients
    report: ResourceReport
    env: dict[str, str]

    @property
    def queue_url(self) -> str:
        return self.report.queue_url

    def cli(self) -> list[str]:
        return [sys.executable, "-m", "shardflow"]


def make_aws_env(emulator: Emulator, shards: int = 2, kinesis: str | None = None) -> AwsEnv:
    """Fresh resources on the emulator; with ``kinesis`` (an endpoint, e.g. kinesis-local's),
    the stream is created there and every Kinesis call goes there, the rest to the emulator."""
    suffix = uuid.uuid4().hex[:10]
    names = ResourceNames(
        stream=f"t-clicks-{suffix}",
        table=f"t-aggregates-{suffix}",
        dead_letter_queue=f"t-dead-{suffix}",
        alert_topic=f"t-alerts-{suffix}",
        other_streams=(),
    )
    base = Settings.from_env()
    settings = replace(
        base,
        stream=names.stream,
        table=names.table,
        dead_letter_queue=names.dead_letter_queue,
        alert_topic=names.alert_topic,
        endpoint_url=emulator.url,
        service_endpoints={**base.service_endpoints, **({"kinesis": kinesis} if kinesis else {})},
        region=base.region or EMULATOR_ENV["AWS_REGION"],
        static_credentials=EMULATOR_CREDENTIALS if emulator.embedded else None,
        # As the SHARDFLOW_* variables below do for the command line: these names apply
        # to every pipeline, whatever it declares.
        chosen=frozenset({"stream", "table", "dead_letter_queue", "alert_topic"}),
    )
    clients = make_clients(settings)
    report = ensure_resources(
        clients.kinesis, clients.dynamodb, clients.sqs, clients.sns, names, shards
    )
    env = {
        **os.environ,
        **(EMULATOR_ENV if emulator.embedded else {}),
        "AWS_ENDPOINT_URL": emulator.url,
        "AWS_REGION": settings.region or "us-east-1",
        "SHARDFLOW_STREAM": names.stream,
        "SHARDFLOW_TABLE": names.table,
        "SHARDFLOW_DEAD_LETTER_QUEUE": names.dead_letter_queue,
        "SHARDFLOW_ALERT_TOPIC": names.alert_topic,
        **({"AWS_ENDPOINT_URL_KINESIS": kinesis} if kinesis else {}),
    }
    return AwsEnv(settings, clients, report, env)


@pytest.fixture
def aws(emulator: Emulator) -> AwsEnv:
    """Fresh resources (a 2-shard stream, table, queue, topic) on the emulator."""
    return make_aws_env(emulator, shards=2)
