"""Settings, read from the environment once, in entry points, and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_STREAM = "clickstream"
DEVICE_READINGS_STREAM = "device-readings"
"""The device-sessions example pipeline's source stream."""
DEFAULT_TABLE = "shardflow-aggregates"
DEFAULT_DEAD_LETTER_QUEUE = "shardflow-dead-letters"
DEFAULT_ALERT_TOPIC = "shardflow-alerts"
DEFAULT_REGION = "us-east-1"

SERVICES = ("kinesis", "dynamodb", "sqs", "sns")

_NAME_VARIABLES = {
    "stream": "SHARDFLOW_STREAM",
    "table": "SHARDFLOW_TABLE",
    "dead_letter_queue": "SHARDFLOW_DEAD_LETTER_QUEUE",
    "alert_topic": "SHARDFLOW_ALERT_TOPIC",
}


@dataclass(frozen=True)
class Settings:
    """Where shardflow's resources are and how to reach them.

    ``endpoint_url`` is the general endpoint (``AWS_ENDPOINT_URL``); ``service_endpoints``
    holds per-service overrides (``AWS_ENDPOINT_URL_KINESIS`` and so on). Both unset means
    real AWS.
    """

    stream: str = DEFAULT_STREAM
    table: str = DEFAULT_TABLE
    dead_letter_queue: str = DEFAULT_DEAD_LETTER_QUEUE
    alert_topic: str = DEFAULT_ALERT_TOPIC
    region: str | None = None
    endpoint_url: str | None = None
    service_endpoints: Mapping[str, str] = field(default_factory=dict)
    static_credentials: tuple[str, str] | None = None
    """(access key id, secret) for the embedded emulator; None uses boto3's usual chain."""
    chosen: frozenset[str] = frozenset()
    """Names set by a flag or the environment (``stream``, ``table``, ...): these apply to
    every pipeline. Otherwise a pipeline's declared source and sinks win over the defaults."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (the process environment by default)."""
        env = os.environ if env is None else env
        services = {
            service: env[f"AWS_ENDPOINT_URL_{service.upper()}"]
            for service in SERVICES
            if env.get(f"AWS_ENDPOINT_URL_{service.upper()}")
        }
        return cls(
            stream=env.get("SHARDFLOW_STREAM") or DEFAULT_STREAM,
            table=env.get("SHARDFLOW_TABLE") or DEFAULT_TABLE,
            dead_letter_queue=env.get("SHARDFLOW_DEAD_LETTER_QUEUE") or DEFAULT_DEAD_LETTER_QUEUE,
            alert_topic=env.get("SHARDFLOW_ALERT_TOPIC") or DEFAULT_ALERT_TOPIC,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            service_endpoints=services,
            # A variable that repeats the default (as a copied LocalStack env file does)
            # chooses nothing: declared names still apply.
            chosen=frozenset(
                name
                for name, variable in _NAME_VARIABLES.items()
                if env.get(variable) and env[variable] != getattr(cls, name)
            ),
        )

    def endpoint_for(self, service: str) -> str | None:
        """The endpoint a client for ``service`` talks to, or None for real AWS."""
        return self.service_endpoints.get(service) or self.endpoint_url

    @property
    def uses_emulator(self) -> bool:
        """True when any endpoint is overridden (LocalStack, moto or kinesis-local)."""
        return bool(self.endpoint_url or self.service_endpoints)

    def with_overrides(self, **changes: str | None) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        chosen = self.chosen | {name for name in given if name in _NAME_VARIABLES}
        return replace(self, **given, chosen=chosen)

    def _resolve(self, name: str, declared: str | None) -> str:
        configured: str = getattr(self, name)
        if name in self.chosen or declared is None:
            return configured
        return declared

    def stream_for(self, source: str | None) -> str:
        """The stream a pipeline whose declared source is ``source`` reads."""
        return self._resolve("stream", source)

    def table_for(self, declared: str | None) -> str:
        """The results table of a pipeline that declares ``declared`` (or None)."""
        return self._resolve("table", declared)

    def dead_letter_queue_for(self, declared: str | None) -> str:
        return self._resolve("dead_letter_queue", declared)

    def alert_topic_for(self, declared: str | None) -> str:
        return self._resolve("alert_topic", declared)
