"""Settings, read from the environment once, in entry points, and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_STREAM = "clickstream"
DEFAULT_TABLE = "shardflow-aggregates"
DEFAULT_DEAD_LETTER_QUEUE = "shardflow-dead-letters"
DEFAULT_ALERT_TOPIC = "shardflow-alerts"
DEFAULT_REGION = "us-east-1"

SERVICES = ("kinesis", "dynamodb", "sqs", "sns")


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
        return replace(self, **given)
