"""The one place that builds boto3 clients and knows endpoints, region and credentials."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from shardflow.settings import DEFAULT_REGION, Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=16,
)
# Kinesis callers back off per shard (reader) or per entry (producer) themselves; long
# retries inside botocore would stall every other shard of the single-threaded runner.
_KINESIS_CONFIG = _CONFIG.merge(Config(retries={"mode": "standard", "max_attempts": 2}))


@dataclass
class AwsClients:
    """Lazily built boto3 clients for the services shardflow uses."""

    settings: Settings

    def _client(self, service: str) -> Any:
        session = boto3.session.Session()
        region = self.settings.region or session.region_name
        if region is None and self.settings.uses_emulator:
            region = DEFAULT_REGION
        credentials = self.settings.static_credentials
        return session.client(
            service,  # type: ignore[call-overload]
            region_name=region,
            endpoint_url=self.settings.endpoint_for(service),
            aws_access_key_id=credentials[0] if credentials else None,
            aws_secret_access_key=credentials[1] if credentials else None,
            config=_KINESIS_CONFIG if service == "kinesis" else _CONFIG,
        )

    @cached_property
    def kinesis(self) -> KinesisClient:
        return self._client("kinesis")  # type: ignore[no-any-return]

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self._client("dynamodb")  # type: ignore[no-any-return]

    @cached_property
    def sqs(self) -> SQSClient:
        return self._client("sqs")  # type: ignore[no-any-return]

    @cached_property
    def sns(self) -> SNSClient:
        return self._client("sns")  # type: ignore[no-any-return]


def make_clients(settings: Settings) -> AwsClients:
    """Clients for every service, built on first use."""
    return AwsClients(settings)
