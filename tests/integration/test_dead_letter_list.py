"""`shardflow dead-letters` lists what the runner rejected, readably, and removes nothing:
a malformed line and a late event, produced through the command line and run."""

from __future__ import annotations

import json
import subprocess

import orjson
import pytest

from tests.conftest import AwsEnv
from tests.oracle import drain_queue

pytestmark = pytest.mark.emulator

T0 = 1_795_773_600_000


def shardflow(
    aws: AwsEnv, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [*aws.cli(), *args], input=stdin, env=aws.env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_dead_letters_are_listed_with_reason_position_and_payload(aws: AwsEnv) -> None:
    late = orjson.dumps({"event_id": "late", "ts": T0, "page": "/a"})
    lines = [
        orjson.dumps({"event_id": "e1", "ts": T0 + 300_000, "page": "/a"}),
        b"{not json",
        late,
    ]
    # Keyed by page: both events on one shard, the late one after the one that makes it late.
    events = b"\n".join(lines) + b"\n"
    shardflow(aws, "produce", "-", "--partition-key", "page", stdin=events)
    shardflow(aws, "run", "page-views", "--until-idle", "1")

    listed = json.loads(shardflow(aws, "dead-letters", "--format", "json").stdout)
    assert sorted(letter["reason"] for letter in listed) == ["invalid", "late"]
    by_reason = {letter["reason"]: letter for letter in listed}
    assert by_reason["invalid"]["payload"] == "{not json"
    assert "malformed JSON" in by_reason["invalid"]["error"]
    assert by_reason["late"]["payload"] == late.decode()
    assert by_reason["late"]["shard_id"] and by_reason["late"]["sequence_number"]

    only_late = json.loads(
        shardflow(aws, "dead-letters", "--reason", "late", "--format", "json").stdout
    )
    assert [letter["reason"] for letter in only_late] == ["late"]

    table = shardflow(aws, "dead-letters", "--limit", "1")
    assert table.stdout.decode().count("payload") == 1
    assert "1 shown" in table.stderr.decode()
    # Listing removed nothing: both are still in the queue.
    assert len(drain_queue(aws.clients.sqs, aws.queue_url)) == 2


def test_a_listing_finds_every_letter_of_a_large_queue_and_leaves_them_all(aws: AwsEnv) -> None:
    sqs = aws.clients.sqs
    for batch in range(0, 250, 10):
        sqs.send_message_batch(
            QueueUrl=aws.queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(
                        {"reason": "invalid" if i % 50 else "late", "dead_letter_id": f"d{i}"}
                    ),
                }
                for i in range(batch, batch + 10)
            ],
        )
    listed = json.loads(
        shardflow(aws, "dead-letters", "--limit", "1000", "--format", "json").stdout
    )
    assert sorted(letter["dead_letter_id"] for letter in listed) == sorted(
        f"d{i}" for i in range(250)
    )
    late = json.loads(shardflow(aws, "dead-letters", "--reason", "late", "--format", "json").stdout)
    assert sorted(letter["dead_letter_id"] for letter in late) == sorted(
        f"d{i}" for i in range(0, 250, 50)
    )
    # Made visible again at once: a reader gets them all now, not after the hold.
    assert len(drain_queue(sqs, aws.queue_url)) == 250
