"""One receive's letters, redriven: each checked, claimed, put, then marked sent and
deleted once every record it holds is in the stream.

A letter holds one record, or, when its data is a whole KPL aggregate, one per user
record, redriven under ``<dead_letter_id>/<index>`` with its own partition key. Each
record is:

1. decoded with the pipeline as it is now, with the engine's checks (still invalid: left);
2. placed: if every window of its event is already final on the shard it would land on,
   it is left (:mod:`shardflow.redrive_target`), since it would come back late;
3. claimed in the ledger (``sending``) and put, in an envelope for this pipeline alone
   carrying its id; once Kinesis took it, marked ``sent``.

A claim found at ``sending`` (an earlier run stopped, or its put failed without a clear
answer) is put again: the engine counts one copy of each id, however many the stream
holds. A failed put leaves the claim and the letter; the next run sends it again. Errors
are per letter: one that fails in any way leaves that letter and not the others.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.pipeline import Pipeline
from processors.windowing.engine import checked_event
from processors.windowing.redrive_envelope import wrap
from schemas.errors import InvalidEvent
from shardflow.redrive_ledger import NEW, SENDING, SENT, RedriveLedger
from shardflow.redrive_queue import RunQueue
from shardflow.redrive_report import RedriveReport
from shardflow.redrive_target import Placements
from streams.kpl import MalformedAggregate, decode_aggregate
from streams.producer_api import BufferFull, ProduceFailed, PutResult, RecordRejected

log = logging.getLogger("shardflow.redrive")

PUT_TIMEOUT_S = 120.0
"""How long each put is waited for (the producer gives up on a record after 30 s)."""
WAIT_SLICE_S = 5.0
"""Held messages are kept hidden between slices of waiting."""


class Producer(Protocol):
    def put(
        self,
        data: bytes,
        partition_key: str,
        *,
        explicit_hash_key: str | None = None,
        block: bool = True,
    ) -> Future[PutResult]: ...


@dataclass
class Letter:
    """A dead letter of the pipeline, and the messages carrying it in this receive."""

    body: dict[str, Any]
    copies: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.body["dead_letter_id"])


@dataclass(frozen=True)
class Unit:
    """One record to put back."""

    id: str
    data: bytes
    partition_key: str
    explicit_hash_key: str | None = None


@dataclass(frozen=True)
class _Put:
    letter: Letter
    unit: Unit
    future: Future[PutResult]
    resend: bool
    """The claim was ``sending`` already: an earlier put of it had no clear outcome."""


def _partition_key(letter: Letter) -> str:
    key = letter.body.get("partition_key")
    return key if isinstance(key, str) and 1 <= len(key) <= 256 else letter.id[:256]


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LetterHandler:
    def __init__(
        self,
        pipeline: Pipeline[Any],
        producer: Producer,
        ledger: RedriveLedger,
        queue: RunQueue,
        placements: Placements,
        report: RedriveReport,
        clock_ms: Callable[[], int],
    ) -> None:
        self.pipeline = pipeline
        self.producer = producer
        self.ledger = ledger
        self.queue = queue
        self.placements = placements
        self.report = report
        self.clock_ms = clock_ms

    def handle(self, letters: Sequence[Letter]) -> dict[str, bool]:
        """Redrive ``letters`` (distinct ids); for each letter handled, whether it was
        deleted. Every put made is waited for, whatever happens."""
        open_units: dict[str, int] = {}
        """Letter id -> its records not yet known to be in the stream (-1: not redriven)."""
        pending: list[_Put] = []
        try:
            for letter in letters:
                try:
                    units = self._units(letter)
                except Exception as exc:
                    self.report.errors.append((letter.id, _error(exc)))
                    units = None
                open_units[letter.id] = -1 if units is None else len(units)
                for unit in units or ():
                    if self._start(unit, letter, pending):
                        open_units[letter.id] -= 1
        finally:
            for put in pending:
                if self._finish(put):
                    open_units[put.letter.id] -= 1
            outcome = {letter_id: left == 0 for letter_id, left in open_units.items()}
            for letter in letters:
                if outcome.get(letter.id):
                    for message_id in letter.copies:
                        if not self.queue.delete(message_id):
                            self.report.not_deleted += 1
                    self.report.duplicates += len(letter.copies) - 1
                elif letter.id in outcome:
                    self.report.copies_left += len(letter.copies) - 1
        return outcome

    def _units(self, letter: Letter) -> list[Unit] | None:
        """The records in ``letter``, or None when it cannot be redriven (reported)."""
        report = self.report
        if letter.body.get("data_truncated"):
            report.cut.append(letter.id)
            return None
        try:
            data = base64.b64decode(str(letter.body.get("data", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            report.still_invalid.append((letter.id, f"the letter's data is not base64: {exc}"))
            return None
        try:
            users = decode_aggregate(data)
        except MalformedAggregate as exc:
            report.still_invalid.append((letter.id, f"malformed KPL aggregate: {exc}"))
            return None
        if users is None:
            return [Unit(letter.id, data, _partition_key(letter))]
        return [
            Unit(f"{letter.id}/{index}", user.data, user.partition_key, user.explicit_hash_key)
            for index, user in enumerate(users)
        ]

    def _start(self, unit: Unit, letter: Letter, pending: list[_Put]) -> bool:
        """Check, place, claim and put ``unit``; True when it needs nothing more (the
        ledger had it as sent)."""
        report = self.report
        try:
            # The record arrives again now: the engine's future-time check runs from now.
            _, ts, _ = checked_event(self.pipeline, unit.data, self.clock_ms())
        except InvalidEvent as exc:
            report.still_invalid.append((unit.id, str(exc)))
            return False
        except Exception as exc:
            report.errors.append((unit.id, f"decoding raised {_error(exc)}"))
            return False
        try:
            landing = self.placements.current().landing(unit.partition_key, unit.explicit_hash_key)
            windows = self.pipeline.windows.assign(ts)
            if landing.final_windows(windows):
                if self.ledger.state(unit.id) == SENT:
                    report.already_sent += 1
                    return True
                first = windows[0]
                more = f" and {len(windows) - 1} later windows" if len(windows) > 1 else ""
                report.final.append(
                    (
                        unit.id,
                        f"window already final (would come back late): event time {ts} is "
                        f"in [{first.start_ms}, {first.end_ms}){more}, final on "
                        f"{landing.shard_id} (watermark {landing.watermark})",
                    )
                )
                return False
            state = self.ledger.claim(unit.id)
            if state == SENT:
                report.already_sent += 1
                return True
            data = wrap(self.pipeline.name, unit.id, unit.data)
        except Exception as exc:
            report.errors.append((unit.id, _error(exc)))
            return False
        try:
            future = self._put(data, unit)
        except RecordRejected as exc:
            report.failed.append((unit.id, f"Kinesis would not take it: {exc}"))
            if state == NEW:
                self._release(unit.id)  # certainly not in the stream
            return False
        pending.append(_Put(letter, unit, future, resend=state == SENDING))
        return False

    def _release(self, unit_id: str) -> None:
        try:
            self.ledger.release(unit_id)
        except Exception as exc:  # the claim stays: the next run puts it again
            log.warning("could not release the claim of %s: %s", unit_id, exc)

    def _put(self, data: bytes, unit: Unit) -> Future[PutResult]:
        while True:
            try:
                return self.producer.put(
                    data, unit.partition_key, explicit_hash_key=unit.explicit_hash_key, block=False
                )
            except BufferFull as full:
                self.queue.keep_alive()
                time.sleep(full.retry_after)

    def _finish(self, put: _Put) -> bool:
        """Wait for a put (up to :data:`PUT_TIMEOUT_S` of its own), then mark it sent;
        True when it is in the stream and marked. A failed put leaves its claim at
        ``sending``: the next run puts the record again."""
        report, unit = self.report, put.unit
        deadline = time.monotonic() + PUT_TIMEOUT_S
        while True:
            try:
                wait = min(WAIT_SLICE_S, deadline - time.monotonic())
                result = put.future.result(timeout=max(0.0, wait))
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    why = f"no answer from Kinesis within {PUT_TIMEOUT_S:g} s"
                    report.failed.append((unit.id, why))
                    return False
                self.queue.keep_alive()
            except ProduceFailed as exc:
                report.failed.append((unit.id, exc.reason))
                return False
            except Exception as exc:
                report.failed.append((unit.id, _error(exc)))
                return False
        try:
            self.ledger.mark_sent(unit.id, result.shard_id, result.sequence_number)
        except Exception as exc:
            # In the stream, but not marked: the letter stays, its claim stays
            # ``sending``, and the next run sends a copy that the pipeline skips.
            report.errors.append((unit.id, f"sent, but the ledger failed: {_error(exc)}"))
            return False
        report.sent += 1
        report.resent += put.resend
        return True
