"""pytest plugin (loaded by tests/conftest.py): the kinesis-local tier.

moto never ends a closed shard, so tests of resharding (and of the KCL) run Kinesis on
kinesis-local, the npm package of kinesis-mock, and everything else on moto:

- ``kinesis_local``: the plain-HTTP endpoint of kinesis-local, started once per session on
  free loopback ports (``shardflow/kinesis_local.py`` binds it to 127.0.0.1) and stopped by
  its PID at the end. With ``AWS_ENDPOINT_URL_KINESIS`` set, that endpoint is used instead
  (LocalStack's Kinesis is kinesis-mock too). Not installed: every test that needs it
  fails, saying to run ``make test``; none is skipped.
- ``aws_kinesis_local``: a test's own resources, like ``aws``, with the stream created on
  kinesis-local and ``AWS_ENDPOINT_URL_KINESIS`` in the environment of CLI subprocesses.

Every test that uses ``kinesis_local`` is marked ``kinesis_local``: ``make
test-kinesis-local`` (``pytest -m kinesis_local``) runs that tier alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shardflow.kinesis_local import VERSION, KinesisLocal, KinesisLocalUnavailable
from tests.conftest import AwsEnv, Emulator, make_aws_env

MARKER = "kinesis_local"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: runs Kinesis on kinesis-local {VERSION} (started by the fixture; "
        "`make test` installs it)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MARKER in getattr(item, "fixturenames", ()):
            item.add_marker(MARKER)


@pytest.fixture(scope="session")
def kinesis_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Kinesis endpoint with real shard ends: kinesis-local on loopback."""
    given = os.environ.get("AWS_ENDPOINT_URL_KINESIS")
    if given:
        yield given
        return
    log = tmp_path_factory.mktemp("kinesis-local") / "kinesis-local.log"
    server = KinesisLocal(log=log)
    try:
        server.start()
    except KinesisLocalUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


def make_kinesis_local_env(emulator: Emulator, kinesis_local: str, shards: int = 2) -> AwsEnv:
    """A test's resources: the stream on kinesis-local, the rest on the emulator."""
    return make_aws_env(emulator, shards=shards, kinesis=kinesis_local)


@pytest.fixture
def aws_kinesis_local(emulator: Emulator, kinesis_local: str) -> AwsEnv:
    """Fresh resources: a 2-shard stream on kinesis-local; table, queue, topic on moto."""
    return make_kinesis_local_env(emulator, kinesis_local, shards=2)
