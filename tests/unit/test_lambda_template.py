"""deploy/lambda/template.yaml: valid (cfn-lint, with the SAM transform), wired to the code
that exists, and least privilege (no wildcard, only what each function calls)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).parents[2] / "deploy" / "lambda" / "template.yaml"

cfnlint_api = pytest.importorskip("cfnlint.api")


def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, matches = decode(str(TEMPLATE))
    assert not matches and decoded is not None
    return dict(decoded)


def test_cfn_lint_finds_nothing() -> None:
    # Without the SAM translator cfn-lint skips a SAM template's functions silently.
    importlib.import_module("samtranslator")
    matches = cfnlint_api.lint_file(TEMPLATE)
    assert [str(match) for match in matches] == []


def test_cfn_lint_would_find_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    text = TEMPLATE.read_text().replace("Runtime: python3.12", "Runtime: python3.6")
    broken.write_text(text.replace("!GetAtt ResultsTable.Arn", "!GetAtt ResultsTable.Nope"))
    rules = {match.rule.id for match in cfnlint_api.lint_file(broken)}
    assert {"E1010", "E2533"} <= rules


def function(name: str) -> dict[str, Any]:
    resource = template()["Resources"][name]
    assert resource["Type"] == "AWS::Serverless::Function"
    return dict(resource["Properties"])


def test_the_handlers_exist() -> None:
    for name in ("ProcessorFunction", "FinalizerFunction"):
        module, _, attribute = function(name)["Handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), attribute))


def test_the_event_source_mapping_keeps_shard_order_and_never_skips_records() -> None:
    events = function("ProcessorFunction")["Events"]
    (stream,) = events.values()
    assert stream["Type"] == "Kinesis"
    properties = stream["Properties"]
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["ParallelizationFactor"] == 1
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["MaximumRetryAttempts"] == -1
    assert properties["MaximumRecordAgeInSeconds"] == -1
    assert properties["BisectBatchOnFunctionError"] is False
    schedule = function("FinalizerFunction")["Events"]["EveryMinute"]
    assert schedule["Properties"]["Schedule"] == "rate(1 minute)"


def test_the_environment_names_what_settings_read() -> None:
    variables = template()["Globals"]["Function"]["Environment"]["Variables"]
    assert set(variables) == {
        "SHARDFLOW_STREAM",
        "SHARDFLOW_TABLE",
        "SHARDFLOW_DEAD_LETTER_QUEUE",
        "SHARDFLOW_ALERT_TOPIC",
        "SHARDFLOW_PIPELINES",
    }


def test_the_table_and_queue_are_as_shardflow_up_makes_them() -> None:
    resources = template()["Resources"]
    table = resources["ResultsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    queue = resources["DeadLetterQueue"]["Properties"]
    assert queue["MessageRetentionPeriod"] == 1209600


EXPECTED_ACTIONS = {
    "ProcessorRole": {
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
    "FinalizerRole": {
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "sns:Publish",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    },
}


@pytest.mark.parametrize("role", sorted(EXPECTED_ACTIONS))
def test_each_role_allows_only_what_its_function_calls_on_its_resources(role: str) -> None:
    resources = template()["Resources"]
    properties = resources[role]["Properties"]
    assert "ManagedPolicyArns" not in properties
    actions = set()
    for policy in properties["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            listed = statement["Action"]
            listed = [listed] if isinstance(listed, str) else listed
            assert all("*" not in action for action in listed)
            assert statement["Resource"] != "*" and "*" not in str(statement["Resource"])
            actions.update(listed)
    assert actions == EXPECTED_ACTIONS[role]
    for name in ("ProcessorFunction", "FinalizerFunction"):
        assert "Policies" not in function(name)  # SAM adds none when Role is given
