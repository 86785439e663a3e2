"""Deaggregating what a stream holds with aws-kinesis-agg, a reader independent of
shardflow's own (streams/kpl.py), for the tests that compare with tests/oracle.py."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from aws_kinesis_agg import deaggregator


def deaggregated(
    shards: Mapping[str, Sequence[tuple[str, bytes]]],
) -> dict[str, list[tuple[str, int, bytes]]]:
    """shard id -> [(sequence number, sub-sequence number, data)] of the user records, in
    order; a record that is not an aggregate is one user record with sub-sequence 0."""
    out: dict[str, list[tuple[str, int, bytes]]] = {}
    for shard_id, records in shards.items():
        users = out[shard_id] = []
        for sequence, data in records:
            record = {
                "SequenceNumber": sequence,
                "PartitionKey": "p",
                "ApproximateArrivalTimestamp": 0,
                "Data": data,
            }
            for item in deaggregator.iter_deaggregate_records([record], "Boto3"):
                inner = item["kinesis"]
                sub = int(inner.get("subSequenceNumber") or 0)
                # User records of an aggregate come back base64-encoded (the Lambda event
                # shape); a plain record's data comes back as it was.
                payload = inner["data"]
                if inner.get("aggregated"):
                    payload = base64.b64decode(payload)
                users.append((sequence, sub, payload))
    return out
