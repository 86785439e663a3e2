"""The KCL lease's side of the record processor: its checkpoint, and retries.

The lease's checkpoint only says where the next owner of the shard starts reading. It is
moved to what the results table holds durably (never beyond), so it may lag behind it;
records read again are skipped by the engines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from processors.windowing.engine import ShardEngine
from processors.windowing.records import Position
from streams.aws_errors import is_retryable
from streams.backoff import full_jitter
from streams.kcl_protocol import Checkpointer

log = logging.getLogger("shardflow.kcl")

_T = TypeVar("_T")

RETRY_CHECKPOINT = frozenset({"ThrottlingException", "KinesisClientLibDependencyException"})
"""Checkpoint errors worth another try (the lease table is throttled or unreachable)."""
LEASE_GONE = frozenset({"ShutdownException"})
"""The lease is being lost or released: stop checkpointing, the daemon says what next."""


Outcome = Literal["taken", "gone", "throttled"]


class CheckpointRefused(RuntimeError):
    """The daemon refused a checkpoint for a reason a retry cannot fix."""


class CheckpointAhead(RuntimeError):
    """The lease table's checkpoint is past what the results table holds."""


def describe(position: Position | None) -> str:
    return f"{position.sequence_number}/{position.sub}" if position else "nothing"


def check_not_ahead(shard_id: str, lease: Position | None, engines: Sequence[ShardEngine]) -> None:
    """The lease's checkpoint is never past what the results table holds (it only moves to
    what is durable there). If it is, the lease table was made with other results, and the
    records in between would never be read: refused."""
    for engine in engines:
        durable = engine.durable.checkpoint
        if lease is not None and (durable is None or durable < lease):
            raise CheckpointAhead(
                f"shard {shard_id}: the KCL lease table has it checkpointed at "
                f"{describe(lease)}, past what the results table holds for "
                f"{engine.pipeline.name} ({describe(durable)}): the records in between "
                "would never be read. Give these results their own lease table (a new "
                "--kcl-application), or point at the right results table"
            )


def lease_position(sequence_number: str | None, sub: int | None) -> Position | None:
    """The lease's checkpoint as ``initialize`` gives it, or None for the sentinels
    (TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END)."""
    if sequence_number is None or not sequence_number.isdigit():
        return None
    return Position(int(sequence_number), sub or 0)


def checkpoint_lease(
    checkpointer: Checkpointer,
    target: Position | None,
    shard_id: str,
    attempts: int,
    sleep: Callable[[float], None],
) -> Outcome:
    """Ask the daemon to checkpoint at ``target`` (None: SHARD_END), retrying throttling
    with backoff: "taken"; "gone" when the lease is going; "throttled" when the lease
    table stayed throttled. Raises :class:`CheckpointRefused` otherwise (a position the
    daemon does not allow, an invalid state)."""
    for attempt in range(attempts):
        error = checkpointer.checkpoint(target)
        if error is None:
            return "taken"
        name = error.rsplit(".", 1)[-1]
        if name in LEASE_GONE:
            log.info("shard %s: checkpoint refused (%s): the lease is going", shard_id, name)
            return "gone"
        if name not in RETRY_CHECKPOINT:
            raise CheckpointRefused(f"shard {shard_id}: the KCL refused the checkpoint: {error}")
        sleep(full_jitter(attempt, base=0.2, cap=5.0))
    log.warning("shard %s: checkpoint still throttled after %d tries", shard_id, attempts)
    return "throttled"


def retrying(
    what: str,
    shard_id: str,
    call: Callable[[], _T],
    deadline_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """``call()``, retried with backoff on throttling and transient AWS errors until
    ``deadline_s`` has passed; anything else is raised at once."""
    deadline = clock() + deadline_s
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_retryable(exc) or clock() > deadline:
                raise
            attempt += 1
            delay = full_jitter(attempt, base=0.2, cap=10.0)
            log.warning("shard %s: %s failed (%s), retrying in %.1fs", shard_id, what, exc, delay)
            sleep(delay)
