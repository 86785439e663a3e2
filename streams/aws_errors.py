"""The one place that reads botocore error codes and turns them into domain errors."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TransactionConflictException",
        "KMSThrottlingException",
        "RequestThrottled",
    }
)
SERVER_CODES = frozenset({"InternalFailure", "InternalServerError", "ServiceUnavailable"})


class ResourceMissing(Exception):
    """A stream, table or queue that does not exist (run ``shardflow up``)."""


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of ``exc``, or None for errors that are not service errors."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def is_retryable(exc: BaseException) -> bool:
    """Throttling, server errors and dropped connections: worth a retry with backoff."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True  # refused, reset, timed out: the endpoint may be back in a moment
    code = error_code(exc)
    if code is None:
        return False
    if code in THROTTLING_CODES or code in SERVER_CODES:
        return True
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)  # type: ignore[attr-defined]
    return bool(status >= 500)


def is_conditional_failure(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
    }


def describe(exc: BaseException) -> str | None:
    """A one-line explanation for errors a user can fix, or None."""
    if isinstance(exc, EndpointConnectionError):
        return (
            f"cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}: is the emulator "
            "running (shardflow emulator), or is AWS_ENDPOINT_URL (or the service's own "
            "AWS_ENDPOINT_URL_<SERVICE>, e.g. AWS_ENDPOINT_URL_KINESIS) right?"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region configured: set AWS_REGION (for example us-east-1)"
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials found: configure a profile, "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if is_not_found(exc):
            return f"{message or code}: create the resources with `shardflow up`"
        return f"{code}: {message}"
    if isinstance(exc, BotoCoreError):
        return str(exc)
    return None
