"""Shards under Lambda: which are registered, and when one has ended or gone quiet.

Lambda invokes the function only with records, so it never says that a shard has ended
or is quiet. The embedded runner knows both from its own reads; here the scheduled
finalizer finds them out from the stream (ListShards, and one short read after each
shard's checkpoint), and records them with the conditional marks of
:mod:`streams.lambda_progress`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from processors.pipeline import Pipeline
from processors.sinks.ports import PartialStore
from processors.windowing.records import Position
from streams.aws_errors import error_code, is_retryable
from streams.lambda_progress import DynamoShardClaims
from streams.shard_reader import expand_records
from streams.shard_work import register_children

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger("shardflow.lambda")

TIP_READS = 3
"""GetRecords calls per shard and pass at most (the ESM shares the shard's 5 reads/s)."""


def _parents(shard: Mapping[str, Any]) -> list[str]:
    return [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]


def is_closed(shard: Mapping[str, Any]) -> bool:
    return "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})


def register_new_shards(
    store: PartialStore,
    pipeline: Pipeline[Any],
    identity: str,
    listed: Sequence[Mapping[str, Any]],
    invoked: str | None = None,
) -> list[str]:
    """Register the listed shards the pipeline does not know yet, as the embedded runner
    does when it starts: shards whose parents are not listed (or have ended) at once, and
    every shard with parents at the final frontier of this moment, so that it neither
    reopens a final window nor holds one open. A child whose parent is listed and not
    ended waits for it, unless it is ``invoked`` (Lambda is already giving it records).
    All are registered together, after one read of the frontier, so a stream's first
    shards all start with no floor. Returns the shards registered."""
    name = pipeline.name
    known = {progress.shard_id: progress for progress in store.read_progress(name)}
    listed_ids = {shard["ShardId"] for shard in listed}
    new: list[tuple[str, bool]] = []
    for shard in listed:
        shard_id = shard["ShardId"]
        if shard_id in known:
            continue
        parents = _parents(shard)
        waiting = any(p in listed_ids and not (p in known and known[p].ended) for p in parents)
        if waiting and shard_id != invoked:
            continue
        new.append((shard_id, bool(parents)))
    if invoked is not None and invoked not in known and invoked not in listed_ids:
        new.append((invoked, True))  # not listed yet: a child just created
    if not new:
        return []
    # Children first, at the frontier of the shards known before (raised while other
    # workers move it: shard_work.register_children); then the shards without parents,
    # which start with no floor (and, with no events yet, hold every window open).
    children = [shard_id for shard_id, child in new if child]
    floor = register_children(store, name, pipeline.allowed_lateness_ms, identity, children)
    for shard_id in children:
        log.info("%s: registered shard %s at floor %s", name, shard_id, floor)
    for shard_id, child in new:
        if not child:
            store.register_shard(name, identity, shard_id, None)
            log.info("%s: registered shard %s", name, shard_id)
    return [shard_id for shard_id, _ in new]


@dataclass(frozen=True)
class Tip:
    """What one short read after a shard's checkpoint found."""

    after: bool = False
    """Records after the checkpoint exist: the shard is not done."""
    at_tip: bool = False
    """Nothing after the checkpoint, and the read reached the shard's tip."""
    ended: bool = False
    """Nothing after the checkpoint, and the shard is closed and read to its end."""
    last_arrival_ms: int | None = None
    """When the checkpoint's Kinesis record arrived, if the read saw it."""


def _arrival(raw: Mapping[str, Any]) -> int | None:
    arrival = raw.get("ApproximateArrivalTimestamp")
    return None if arrival is None else int(arrival.timestamp() * 1000)


def read_tip(
    kinesis: KinesisClient,
    stream: str,
    shard_id: str,
    checkpoint: Position | None,
    closed: bool = False,
) -> Tip:
    """Read the shard from its checkpoint's Kinesis record (a checkpoint may lie inside a
    KPL aggregate) for at most :data:`TIP_READS` calls. Anything inconclusive (throttled,
    behind without records, an unknown shard) is ``Tip()``: not at the tip. A ``closed``
    shard is read on until Kinesis reports its end (often on a read that returns
    nothing after the last records)."""
    kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
    if checkpoint is None:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    else:
        kwargs["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
        kwargs["StartingSequenceNumber"] = checkpoint.sequence_number
    last_arrival = None
    try:
        try:
            iterator: str | None = kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        except ClientError as exc:
            if error_code(exc) != "InvalidArgumentException" or checkpoint is None:
                raise
            # The checkpoint's record is past the stream's retention: whatever is left
            # is newer, and when the last record arrived is unknown.
            kwargs = {"StreamName": stream, "ShardId": shard_id}
            iterator = kinesis.get_shard_iterator(**kwargs, ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
        for _ in range(TIP_READS):
            assert iterator is not None
            response = kinesis.get_records(ShardIterator=iterator, Limit=100)
            raws = response.get("Records", [])
            for raw in raws:
                if checkpoint is not None and int(raw["SequenceNumber"]) == checkpoint.sequence:
                    last_arrival = _arrival(raw)
            records = expand_records(
                shard_id,
                (
                    (int(raw["SequenceNumber"]), raw["PartitionKey"], raw["Data"], None)
                    for raw in raws
                ),
            )
            if any(checkpoint is None or record.position > checkpoint for record in records):
                return Tip(after=True)
            iterator = response.get("NextShardIterator")
            if iterator is None:
                return Tip(at_tip=True, ended=True, last_arrival_ms=last_arrival)
            if not closed and response.get("MillisBehindLatest") == 0:
                return Tip(at_tip=True, last_arrival_ms=last_arrival)
    except (ClientError, BotoCoreError) as exc:
        if not is_retryable(exc) and error_code(exc) != "ResourceNotFoundException":
            raise
        log.warning("shard %s: cannot read its tip now (%s)", shard_id, exc)
    return Tip()


@dataclass
class MarkReport:
    """What one marking pass recorded, by shard id."""

    idle: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


def mark_shards(
    kinesis: KinesisClient,
    stream: str,
    identity: str,
    pipeline: Pipeline[Any],
    store: PartialStore,
    claims: DynamoShardClaims,
    listed: Sequence[Mapping[str, Any]],
    now_ms: int,
) -> MarkReport:
    """Record which of ``pipeline``'s shards have ended (children registered first, at
    the frontier of the moment, as the embedded runner does) or have been quiet at their
    tip for the pipeline's ``idle_timeout_ms``: since their last record arrived, or since
    the first pass that found them so, and since the handler last touched them."""
    report = MarkReport()
    name = pipeline.name
    timeout = pipeline.idle_timeout_ms
    by_id = {shard["ShardId"]: shard for shard in listed}
    for seen in claims.observe(name):
        progress = seen.progress
        shard = by_id.get(progress.shard_id)
        if progress.ended or shard is None or seen.stream not in (None, identity):
            continue
        closed = is_closed(shard)
        if not closed:
            if timeout is None or progress.idle_since_ms is not None:
                continue
            if seen.touched_ms is not None and now_ms - seen.touched_ms < timeout:
                continue  # the handler applied records lately
        tip = read_tip(kinesis, stream, progress.shard_id, progress.checkpoint, closed)
        if tip.ended:
            _register_children(store, pipeline, identity, progress.shard_id, listed)
            if claims.mark_ended(name, seen):
                report.ended.append(progress.shard_id)
                log.info("%s: shard %s was read to its end", name, progress.shard_id)
            continue
        if timeout is None or progress.idle_since_ms is not None or not tip.at_tip:
            continue
        quiet_from = tip.last_arrival_ms if tip.last_arrival_ms is not None else seen.quiet_since_ms
        if quiet_from is None:
            claims.note_quiet(name, seen, now_ms)
        elif now_ms - quiet_from >= timeout and claims.mark_idle(name, seen, now_ms):
            report.idle.append(progress.shard_id)
            log.info(
                "%s: shard %s quiet for %.0fs, idle: its windows no longer wait for it",
                name,
                progress.shard_id,
                (now_ms - quiet_from) / 1000,
            )
    return report


def _register_children(
    store: PartialStore,
    pipeline: Pipeline[Any],
    identity: str,
    parent: str,
    listed: Sequence[Mapping[str, Any]],
) -> None:
    """Before a parent's end is recorded: its children, at what is final now."""
    children = [s["ShardId"] for s in listed if parent in _parents(s)]
    register_children(store, pipeline.name, pipeline.allowed_lateness_ms, identity, children)
