"""LocalStack init hook (READY stage): create shardflow's stream, table, queue and topic.

LocalStack runs every ``*.py`` file in /etc/localstack/init/ready.d once it is ready to
serve requests. It runs them with ``exec(source, {})`` inside its own Python process, not
as a subprocess, so:

- boto3 is importable (LocalStack depends on it);
- ``__file__`` is not defined and ``__name__`` is ``"builtins"``, not ``"__main__"``;
- ``sys.exit`` must not be called: LocalStack's runner catches ``Exception`` (and then
  reports the script as ERROR on /_localstack/init/ready), but not ``SystemExit``.

The resources are not defined here. The hook imports ``shardflow.resources``, the one
definition the CLI (``shardflow up``) and the tests use, from the project's ``shardflow/``
package, which docker-compose.yml mounts read-only at /opt/shardflow/shardflow. That module
needs nothing but the standard library and the boto3 clients passed in.

Environment (all optional):

    SHARDFLOW_STREAM, SHARDFLOW_TABLE,     resource names (defaults: ResourceNames in
    SHARDFLOW_DEAD_LETTER_QUEUE,           shardflow/resources.py, i.e. clickstream,
    SHARDFLOW_ALERT_TOPIC                  shardflow-aggregates, shardflow-dead-letters,
                                           shardflow-alerts)
    SHARDFLOW_SHARDS                       shards for a new stream (default 2)
    SHARDFLOW_INIT_ENDPOINT                where to create them (default http://localhost:4566)
    SHARDFLOW_SOURCE                       folder that holds the shardflow package
                                           (default /opt/shardflow)
    AWS_REGION, AWS_DEFAULT_REGION         region (default us-east-1)

Idempotent: what exists is left alone (an existing stream keeps its shard count).

On failure it prints one line starting with ``shardflow init: FAILED`` to stderr. Run as a
script (``python3 10-shardflow-resources.py``) it then exits with status 1; run by
LocalStack it raises RuntimeError, which LocalStack logs and reports as state ERROR.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PREFIX = "shardflow init:"
DEFAULT_ENDPOINT = "http://localhost:4566"
DEFAULT_SOURCE = "/opt/shardflow"
DEFAULT_REGION = "us-east-1"
SERVICES = ("kinesis", "dynamodb", "sqs", "sns")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _import_resources(source: str) -> tuple[Any, Any, int, str]:
    """``ResourceNames``, ``ensure_resources``, ``DEFAULT_SHARDS`` and the module's file.

    Imported from ``source``; sys.path is left as it was.
    """
    module_file = os.path.join(source, "shardflow", "resources.py")
    if not os.path.isfile(module_file):
        raise RuntimeError(
            f"{module_file} does not exist: SHARDFLOW_SOURCE must be the folder that holds the"
            " shardflow package (in the container: mount ../shardflow at"
            " /opt/shardflow/shardflow, as localstack/docker-compose.yml does)"
        )
    sys.path.insert(0, source)
    try:
        from shardflow.resources import (  # noqa: PLC0415 (needs the sys.path entry)
            DEFAULT_SHARDS,
            ResourceNames,
            ensure_resources,
        )
    except Exception as exc:
        raise RuntimeError(
            f"cannot import shardflow.resources from {source}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        # Do not leave the project on the path of LocalStack's own process.
        if source in sys.path:
            sys.path.remove(source)
    module_file = sys.modules["shardflow.resources"].__file__ or module_file
    return ResourceNames, ensure_resources, DEFAULT_SHARDS, module_file


def _shards(default: int) -> int:
    text = _env("SHARDFLOW_SHARDS", str(default))
    try:
        shards = int(text)
    except ValueError:
        shards = 0
    if shards < 1:
        raise RuntimeError(f"SHARDFLOW_SHARDS must be a whole number >= 1, got {text!r}")
    return shards


def _clients(endpoint: str, region: str) -> dict[str, Any]:
    """boto3 clients for the emulator, with dummy credentials, in a private session."""
    try:
        import boto3  # noqa: PLC0415 (a clear message instead of a traceback)
        from botocore.config import Config  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(f"boto3 is not importable in this Python ({sys.executable})") from exc
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=region
    )
    config = Config(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}
    )
    return {
        service: session.client(service, endpoint_url=endpoint, config=config)
        for service in SERVICES
    }


def ensure_shardflow_resources() -> None:
    """Create what is missing and print what was created or found."""
    endpoint = _env("SHARDFLOW_INIT_ENDPOINT", DEFAULT_ENDPOINT)
    source = os.path.abspath(_env("SHARDFLOW_SOURCE", DEFAULT_SOURCE))
    region = _env("AWS_REGION", "") or _env("AWS_DEFAULT_REGION", DEFAULT_REGION)

    resource_names, ensure_resources, default_shards, module_file = _import_resources(source)
    defaults = resource_names()
    names = resource_names(
        stream=_env("SHARDFLOW_STREAM", defaults.stream),
        table=_env("SHARDFLOW_TABLE", defaults.table),
        dead_letter_queue=_env("SHARDFLOW_DEAD_LETTER_QUEUE", defaults.dead_letter_queue),
        alert_topic=_env("SHARDFLOW_ALERT_TOPIC", defaults.alert_topic),
    )
    shards = _shards(default_shards)
    print(
        f"{PREFIX} endpoint {endpoint}, region {region}, definitions from {module_file}",
        flush=True,
    )

    clients = _clients(endpoint, region)
    try:
        report = ensure_resources(
            kinesis=clients["kinesis"],
            dynamodb=clients["dynamodb"],
            sqs=clients["sqs"],
            sns=clients["sns"],
            names=names,
            shards=shards,
        )
    except Exception as exc:
        raise RuntimeError(
            f"could not create the resources at {endpoint}: {type(exc).__name__}: {exc}"
        ) from exc

    for line in report.lines():
        print(f"{PREFIX} {line}", flush=True)
    note = ""
    if report.shard_count != shards:
        note = f" (SHARDFLOW_SHARDS={shards} applies only when the stream is created)"
    print(
        f"{PREFIX} stream {names.stream}: {report.shard_count} open shards, ACTIVE{note}\n"
        f"{PREFIX}   {report.stream_arn}\n"
        f"{PREFIX} table {names.table}: ACTIVE\n"
        f"{PREFIX} queue {names.dead_letter_queue}: {report.queue_url}\n"
        f"{PREFIX} topic {names.alert_topic}: {report.topic_arn}\n"
        f"{PREFIX} done",
        flush=True,
    )


def _fail(exc: Exception) -> None:
    print(f"{PREFIX} FAILED: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    # Run as a script: exit status 1 on failure.
    try:
        ensure_shardflow_resources()
    except Exception as exc:
        _fail(exc)
        sys.exit(1)
else:
    # Run by LocalStack (exec in its own process, where __name__ is "builtins"): raise, so
    # LocalStack marks the script ERROR; never sys.exit here.
    try:
        ensure_shardflow_resources()
    except Exception as exc:
        _fail(exc)
        raise
