"""The KCL MultiLangDaemon's child protocol: one JSON object per line on stdin/stdout.

The daemon (Java) starts one child process per leased shard and sends it actions:
``initialize``, ``processRecords``, ``leaseLost``, ``shardEnded``, ``shutdownRequested``
(and the legacy ``shutdown`` with reason TERMINATE or ZOMBIE). The child answers each with
``{"action": "status", "responseFor": <action>}``. While handling ``processRecords``,
``shardEnded`` or ``shutdownRequested`` it may ask for checkpoints,
``{"action": "checkpoint", "sequenceNumber", "subSequenceNumber"}``; the daemon answers
each with a checkpoint message whose ``error`` names the Java exception, if any
(``ThrottlingException``, ``ShutdownException``, ...).

This is shardflow's own loop rather than amazon-kclpy's ``KCLProcess``: kclpy catches
every exception a processor raises, prints it, and acknowledges the action anyway, so the
daemon would go on delivering records after a failed flush. Here a failure is logged with
the shard and ends the child with exit code 1 *without* acknowledging: the daemon sees the
child go away and stops (``System.exit(1)``), its leases expire, and other workers (or
this one, restarted by its supervisor) take over from the last durable checkpoint.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping
from typing import IO, Any, Protocol

import orjson

from processors.windowing.records import Position, Record, make_record
from streams.kpl import is_aggregate
from streams.shard_reader import expand_records

log = logging.getLogger("shardflow.kcl")


class ProtocolError(RuntimeError):
    """The daemon sent something the protocol does not allow."""


class Checkpointer(Protocol):
    def checkpoint(self, position: Position | None) -> str | None:
        """Ask the daemon to checkpoint at ``position`` (None: everything delivered, which
        at a shard's end records SHARD_END). Returns the error the daemon reported (the
        Java exception's name), or None on success."""
        ...


class RecordProcessor(Protocol):
    def initialize(self, shard_id: str, sequence_number: str | None, sub: int | None) -> None: ...

    def process_records(
        self, records: list[Record], millis_behind: int | None, checkpointer: Checkpointer
    ) -> None: ...

    def lease_lost(self) -> None: ...

    def shard_ended(self, checkpointer: Checkpointer) -> None: ...

    def shutdown_requested(self, checkpointer: Checkpointer) -> None: ...


def kcl_records(shard_id: str, records: Iterable[Mapping[str, Any]]) -> list[Record]:
    """The records of a ``processRecords`` message, at the positions the embedded runner
    gives them.

    The KCL deaggregates KPL aggregates itself (always) and sends each user record with
    the aggregate's sequence number and its index in the aggregate as sub-sequence
    number, which is exactly the embedded runner's Position(sequence, index). A record
    that still looks like an aggregate at sub-sequence 0 is one the KCL could not decode;
    it goes through :func:`expand_records` as the embedded runner would take it (a
    broken aggregate is passed on whole and dead-lettered as invalid). Redriven records
    are unwrapped from their envelopes by :func:`expand_records` too.
    """
    out: list[Record] = []
    for raw in records:
        sequence = int(raw["sequenceNumber"])
        sub = int(raw.get("subSequenceNumber") or 0)
        key = raw["partitionKey"]
        data = base64.b64decode(raw["data"])
        arrival = raw.get("approximateArrivalTimestamp")
        arrival_ms = int(arrival) if arrival is not None else None
        if is_aggregate(data):
            if sub == 0:
                out.extend(expand_records(shard_id, [(sequence, key, data, arrival_ms)]))
            else:  # a user record that itself holds aggregate bytes: taken as it is
                out.append(make_record(shard_id, sequence, sub, key, data, arrival_ms))
            continue
        (record,) = expand_records(shard_id, [(sequence, key, data, arrival_ms)])
        out.append(record._replace(position=Position(sequence, sub)) if sub else record)
    return out


class _Channel:
    """Lines in, lines out, with checkpoint round trips."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes]) -> None:
        self._reader = reader
        self._writer = writer

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at the end of input."""
        while True:
            line = self._reader.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            message = orjson.loads(line)
            if not isinstance(message, dict) or "action" not in message:
                raise ProtocolError(f"not an action message: {line[:200]!r}")
            return message

    def write(self, message: Mapping[str, Any]) -> None:
        self._writer.write(orjson.dumps(message) + b"\n")
        self._writer.flush()

    def checkpoint(self, position: Position | None) -> str | None:
        self.write(
            {
                "action": "checkpoint",
                "sequenceNumber": position.sequence_number if position else None,
                "subSequenceNumber": position.sub if position else None,
            }
        )
        reply = self.read()
        if reply is None:
            raise ProtocolError("the daemon closed the pipe while a checkpoint was pending")
        if reply["action"] != "checkpoint":
            raise ProtocolError(f"expected a checkpoint reply, got {reply['action']!r}")
        error = reply.get("error")
        return str(error) if error else None


def serve(processor: RecordProcessor, reader: IO[bytes], writer: IO[bytes]) -> int:
    """Run ``processor`` over the daemon's messages until the input ends. Returns the exit
    code: 0 at the end of input, 1 when an action failed (logged with the shard; that
    action is not acknowledged, so the daemon stops instead of going on)."""
    channel = _Channel(reader, writer)
    shard_id = "?"
    while True:
        try:
            message = channel.read()
        except (ProtocolError, orjson.JSONDecodeError) as exc:
            log.error("shard %s: unreadable message from the daemon: %s", shard_id, exc)
            return 1
        if message is None:
            return 0
        action = str(message["action"])
        try:
            if action == "initialize":
                shard_id = str(message["shardId"])
                processor.initialize(
                    shard_id, message.get("sequenceNumber"), message.get("subSequenceNumber")
                )
            elif action == "processRecords":
                records = kcl_records(shard_id, message.get("records") or ())
                processor.process_records(records, message.get("millisBehindLatest"), channel)
            elif action == "leaseLost":
                processor.lease_lost()
            elif action == "shardEnded":
                processor.shard_ended(channel)
            elif action == "shutdownRequested":
                processor.shutdown_requested(channel)
            elif action == "shutdown":  # the v1/v2 form of the last two
                if str(message.get("reason", "")).upper() == "TERMINATE":
                    processor.shard_ended(channel)
                else:
                    processor.lease_lost()
            else:
                raise ProtocolError(f"unknown action {action!r}")
        except Exception:
            log.exception("shard %s: %s failed; stopping this worker's daemon", shard_id, action)
            return 1
        channel.write({"action": "status", "responseFor": action})
