"""The SNS alert sink: on moto in-process (topics, SQS subscriptions, filter policies, FIFO),
and on a fake client for failures moto does not produce.

moto applies subscription filter policies and passes MessageGroupId and
MessageDeduplicationId on to SQS subscriptions, where a FIFO queue deduplicates; it does not
deduplicate at the topic itself, nor check the characters of a message group id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from processors.alerts import (
    SEVERITIES,
    Alert,
    AlertDeliveryError,
    alert_attributes,
    alert_body,
    alert_id,
    alert_subject,
    rule,
)
from processors.sinks.memory import MemoryAlertSink
from processors.sinks.sns_alerts import (
    MAX_BYTES,
    SnsAlertSink,
    entry_bytes,
    message_group_id,
    topic_arn_for,
)
from streams.aws_errors import ResourceMissing

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

START = 1_795_773_600_000  # 2026-11-27T10:00:00Z
ARN = "arn:aws:sns:us-east-1:123456789012:alerts"


def make_alert(n: int, severity: str = "warning", key: str | None = None) -> Alert:
    limit = rule("views > 1000", severity)
    key = f"/page/{n}" if key is None else key
    start, end = START + n * 60_000, START + (n + 1) * 60_000
    values = {"views": 1000 + n, "revenue": 2.5 * n, "top": [["a", n]]}
    return Alert(
        alert_id("page-views", limit, key, start, end),
        "page-views",
        limit,
        key,
        start,
        end,
        1000 + n,
        values,
    )


# -- on moto ----------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """SNS and SQS clients on moto's in-process mock, whatever the environment says."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        yield (
            boto3.client("sns", region_name="us-east-1"),
            boto3.client("sqs", region_name="us-east-1"),
        )


class Spy:
    """Counts PublishBatch calls and their sizes, passing them on."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.batches: list[list[dict[str, Any]]] = []

    def publish_batch(self, **request: Any) -> Any:
        self.batches.append(list(request["PublishBatchRequestEntries"]))
        return self.client.publish_batch(**request)


def subscribe_queue(
    sns: Any, sqs: Any, topic_arn: str, queue_name: str, filter_policy: dict[str, Any] | None
) -> str:
    attributes = {"FifoQueue": "true"} if queue_name.endswith(".fifo") else {}
    queue_url = sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    subscription: dict[str, str] = {"RawMessageDelivery": "false"}
    if filter_policy is not None:
        subscription["FilterPolicy"] = json.dumps(filter_policy)
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes=subscription)
    return str(queue_url)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message in the queue, deleting each (a FIFO group gives its next one after)."""
    messages: list[dict[str, Any]] = []
    while True:
        received = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not received:
            return messages
        for message in received:
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_a_filter_policy_on_severity_gets_exactly_the_critical_alerts(
    aws: tuple[Any, Any],
) -> None:
    sns, sqs = aws
    topic_arn = sns.create_topic(Name="alerts")["TopicArn"]
    critical_url = subscribe_queue(sns, sqs, topic_arn, "critical", {"severity": ["critical"]})
    everything_url = subscribe_queue(sns, sqs, topic_arn, "everything", None)
    alerts = [make_alert(n, SEVERITIES[n % 3]) for n in range(23)]
    spy = Spy(sns)

    SnsAlertSink(spy, topic_arn, sleep=lambda _: None).publish(alerts)  # type: ignore[arg-type]

    assert [len(batch) for batch in spy.batches] == [10, 10, 3]
    critical = {a.alert_id: a for a in alerts if a.rule.severity == "critical"}
    assert len(critical) == 7
    received = drain(sqs, critical_url)
    envelopes = [json.loads(message["Body"]) for message in received]
    assert sorted(json.loads(e["Message"])["alert_id"] for e in envelopes) == sorted(critical)
    for envelope in envelopes:
        alert = critical[json.loads(envelope["Message"])["alert_id"]]
        assert envelope["Type"] == "Notification"
        assert envelope["TopicArn"] == topic_arn
        assert envelope["Subject"] == alert_subject(alert)
        assert json.loads(envelope["Message"]) == alert_body(alert)
        assert envelope["MessageAttributes"] == {
            name: {"Type": "String", "Value": value}
            for name, value in alert_attributes(alert).items()
        }
    assert len(drain(sqs, everything_url)) == 23


def test_a_fifo_topic_groups_by_key_and_deduplicates_by_alert_id(aws: tuple[Any, Any]) -> None:
    sns, sqs = aws
    topic_arn = sns.create_topic(Name="alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    queue_url = subscribe_queue(sns, sqs, topic_arn, "alerts.fifo", None)
    keys = ["/home", "/caf\u00e9", "/" + "x" * 200, "/home"]
    alerts = [make_alert(n, "critical", key) for n, key in enumerate(keys)]
    sink = SnsAlertSink(sns, topic_arn, sleep=lambda _: None)

    sink.publish(alerts)
    sink.publish(alerts)  # again, as after a crash before the sends were recorded

    received = drain(sqs, queue_url)
    assert len(received) == len(alerts)
    by_id = {a.alert_id: a for a in alerts}
    for message in received:
        body = json.loads(json.loads(message["Body"])["Message"])
        alert = by_id.pop(body["alert_id"])
        assert message["Attributes"]["MessageGroupId"] == message_group_id(alert.key)
        assert message["Attributes"]["MessageDeduplicationId"] == alert.alert_id
    assert by_id == {}


def test_topic_arn_for_finds_the_topic_or_says_to_run_up(aws: tuple[Any, Any]) -> None:
    sns, _ = aws
    for n in range(120):  # more than one page of ListTopics (100 a page)
        sns.create_topic(Name=f"other-{n}")
    arn = sns.create_topic(Name="shardflow-alerts")["TopicArn"]
    assert topic_arn_for(sns, "shardflow-alerts") == arn
    with pytest.raises(ResourceMissing) as missing:
        topic_arn_for(sns, "shardflow-alert")
    assert str(missing.value) == "topic shardflow-alert does not exist: run shardflow up"


# -- on a fake client -------------------------------------------------------------------


class FakeSns:
    """PublishBatch that fails what ``failures`` says: a list per call of
    ``{entry id: (code, sender fault)}``, or an exception to raise."""

    def __init__(self, failures: list[Any] | None = None) -> None:
        self.failures = list(failures or [])
        self.calls: list[list[dict[str, Any]]] = []
        self.published: list[dict[str, Any]] = []

    def publish_batch(
        self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        entries = PublishBatchRequestEntries
        assert len(entries) <= 10
        assert len({e["Id"] for e in entries}) == len(entries)
        assert sum(entry_bytes(e) for e in entries) <= MAX_BYTES  # type: ignore[arg-type,misc]
        self.calls.append(entries)
        plan = self.failures.pop(0) if self.failures else {}
        if isinstance(plan, Exception):
            raise plan
        failed = [
            {"Id": e["Id"], "Code": plan[e["Id"]][0], "SenderFault": plan[e["Id"]][1]}
            for e in entries
            if e["Id"] in plan
        ]
        self.published.extend(e for e in entries if e["Id"] not in plan)
        return {
            "Successful": [{"Id": e["Id"]} for e in entries if e["Id"] not in plan],
            "Failed": failed,
        }


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code}!"},
            "ResponseMetadata": {"HTTPStatusCode": status},  # type: ignore[typeddict-item]
        },
        "PublishBatch",
    )


def fake_sink(
    client: FakeSns, arn: str = ARN, attempts: int = 8
) -> tuple[SnsAlertSink, list[float]]:
    sleeps: list[float] = []
    return SnsAlertSink(client, arn, sleep=sleeps.append, attempts=attempts), sleeps  # type: ignore[arg-type]


def test_only_failed_entries_are_resent_with_backoff() -> None:
    client = FakeSns(
        [{"1": ("InternalError", False), "3": ("Throttled", False)}, {"3": ("x", False)}]
    )
    sink, sleeps = fake_sink(client)
    alerts = [make_alert(n) for n in range(5)]

    sink.publish(alerts)

    assert [[e["Id"] for e in call] for call in client.calls] == [
        ["0", "1", "2", "3", "4"],
        ["1", "3"],
        ["3"],
    ]
    assert sorted(json.loads(e["Message"])["alert_id"] for e in client.published) == sorted(
        a.alert_id for a in alerts
    )
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2


def test_a_sender_fault_is_returned_with_the_reason_and_not_resent() -> None:
    client = FakeSns([{"2": ("InvalidParameter", True)}])
    sink, _ = fake_sink(client)
    alerts = [make_alert(n) for n in range(4)]
    refused = sink.publish(alerts)
    assert [(alert.alert_id, why.split(":")[0]) for alert, why in refused] == [
        (alerts[2].alert_id, "InvalidParameter")
    ]
    assert len(client.calls) == 1, "the others went out; the refused one is not retried"


def test_failures_that_never_clear_raise_after_the_attempts() -> None:
    client = FakeSns([{"0": ("InternalError", False)}] * 10)
    sink, sleeps = fake_sink(client, attempts=3)
    with pytest.raises(AlertDeliveryError, match=r"1 alerts could not be published .* after 3"):
        sink.publish([make_alert(0), make_alert(1)])
    assert len(client.calls) == 3
    assert len(sleeps) == 2


def test_throttled_and_failed_calls_are_retried() -> None:
    client = FakeSns([client_error("Throttling", 400), client_error("InternalError", 500), {}])
    sink, sleeps = fake_sink(client)
    sink.publish([make_alert(0)])
    assert len(client.calls) == 3
    assert len(client.published) == 1
    assert len(sleeps) == 2


def test_a_call_that_cannot_succeed_raises_at_once() -> None:
    client = FakeSns([client_error("AuthorizationError", 403)])
    sink, sleeps = fake_sink(client)
    with pytest.raises(AlertDeliveryError, match="AuthorizationError"):
        sink.publish([make_alert(0)])
    assert (len(client.calls), sleeps) == (1, [])


def test_standard_topics_get_no_group_and_fifo_topics_do() -> None:
    standard, fifo = FakeSns(), FakeSns()
    fake_sink(standard)[0].publish([make_alert(0)])
    fake_sink(fifo, ARN + ".fifo")[0].publish([make_alert(0, key="/caf\u00e9")])
    (plain,) = standard.published
    assert "MessageGroupId" not in plain and "MessageDeduplicationId" not in plain
    assert plain["MessageAttributes"]["severity"] == {
        "DataType": "String",
        "StringValue": "warning",
    }
    (ordered,) = fifo.published
    assert ordered["MessageGroupId"] == message_group_id("/caf\u00e9")
    assert ordered["MessageDeduplicationId"] == make_alert(0, key="/caf\u00e9").alert_id


@pytest.mark.parametrize(
    ("key", "kept"),
    [
        ("/home", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("caf\u00e9", False),
        ("a b", False),
        ("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", True),
    ],
)
def test_message_group_ids(key: str, kept: bool) -> None:
    group = message_group_id(key)
    assert (group == key) is kept
    assert 1 <= len(group) <= 128
    if not kept:
        assert group.startswith("sha256:") and group == message_group_id(key)


def test_an_oversize_alert_drops_its_other_values_and_large_ones_batch_by_size() -> None:
    client = FakeSns()
    huge = make_alert(0)
    huge = Alert(
        huge.alert_id,
        huge.pipeline,
        huge.rule,
        huge.key,
        huge.window_start_ms,
        huge.window_end_ms,
        huge.value,
        {"top": [["x" * 1000, 1]] * 300},
    )
    big = Alert(
        huge.alert_id,
        huge.pipeline,
        huge.rule,
        huge.key,
        huge.window_start_ms,
        huge.window_end_ms,
        huge.value,
        {"top": [["x" * 1000, 1]] * 60},
    )
    fake_sink(client)[0].publish([huge, big, big, big, big, big])
    first = json.loads(client.published[0]["Message"])
    assert first["values"] == {} and first["values_truncated"] is True
    assert json.loads(client.published[1]["Message"])["values"] == json.loads(
        json.dumps(big.values)
    )
    assert len(client.calls) > 1


def test_the_memory_sink_keeps_alerts_and_can_fail() -> None:
    sink = MemoryAlertSink(fail_next=2)
    for _ in range(2):
        with pytest.raises(AlertDeliveryError):
            sink.publish([make_alert(0)])
    sink.publish([make_alert(0), make_alert(1)])
    assert sink.published == [make_alert(0), make_alert(1)]
    assert sink.calls == 3
