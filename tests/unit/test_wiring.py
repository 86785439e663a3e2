"""Resource names and wiring: one definition of the defaults, missing resources named."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shardflow import settings as settings_module
from shardflow.resources import ResourceNames
from shardflow.settings import Settings
from shardflow.wiring import queue_url, resource_names
from streams.aws_errors import ResourceMissing


def test_resource_names_default_to_the_settings_defaults() -> None:
    names = ResourceNames()
    assert names.stream == settings_module.DEFAULT_STREAM
    assert names.table == settings_module.DEFAULT_TABLE
    assert names.dead_letter_queue == settings_module.DEFAULT_DEAD_LETTER_QUEUE
    assert names.alert_topic == settings_module.DEFAULT_ALERT_TOPIC
    # `shardflow up` adds the streams the pipelines declare (ensure_for); the LocalStack
    # hook creates ResourceNames' defaults, which include them.
    assert resource_names(Settings()) == replace(names, other_streams=())


class FakeSqs:
    def __init__(self, code: str, message: str) -> None:
        self.error = ClientError({"Error": {"Code": code, "Message": message}}, "GetQueueUrl")

    def get_queue_url(self, QueueName: str) -> Any:
        raise self.error


def clients(code: str, message: str = "") -> Any:
    return SimpleNamespace(sqs=FakeSqs(code, message))


@pytest.mark.parametrize("code", ["AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"])
def test_a_missing_queue_says_to_run_up(code: str) -> None:
    with pytest.raises(ResourceMissing, match="shardflow up"):
        queue_url(clients(code, "The specified queue does not exist."), "dead")


def test_other_queue_errors_are_not_taken_for_a_missing_queue() -> None:
    """Only the error code decides (streams.aws_errors.is_not_found), not the message."""
    with pytest.raises(ClientError):
        queue_url(clients("AccessDenied", "not allowed to learn about NonExistentQueue"), "d")
