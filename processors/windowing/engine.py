"""The per-shard window engine: the exactly-once invariant's pure half (design.md section 4).

One :class:`ShardEngine` runs one pipeline over one shard's records, in shard order:

- it decodes each record, assigns it to windows, and adds it to the partial row of
  (key, window), unless the row already includes the record's position (a replay);
- it decides lateness against the shard's watermark (max event time - allowed lateness),
  which only moves forward, so a replay decides exactly as the first run did;
- it plans flushes in the order that keeps effects exactly once: dead letters, then the
  intent (how far rows may have been written), then the rows, then the checkpoint.

After a restart, rows whose window starts at or before the stored *horizon* may exist in
storage; the engine asks for them (:meth:`rows_to_load`) before it touches them, so a row
is always continued from its stored absolute state, never started again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from processors.pipeline import Pipeline
from processors.windowing.codec import IncompatibleState, StateCodec
from processors.windowing.fold import compile_fold
from processors.windowing.records import Position, Record
from processors.windowing.redrive_claims import ClaimLoader, RedriveClaims
from processors.windowing.redrive_envelope import MALFORMED, malformed_reason
from processors.windowing.rows import PartialRow, RowKey, StoredRow
from processors.windowing.windows import SessionWindows, Window
from schemas.errors import InvalidEvent

HORIZON_STEP_MS = 600_000
"""How far ahead of the max event time the durable horizon is set, so that the intent is
rewritten about once per ten minutes of event time rather than on every flush."""

REASON_INVALID = "invalid"
REASON_LATE = "late"

MAX_KEY_BYTES = 1024
"""Longer keys are invalid: a DynamoDB partition key holds at most 2048 bytes, and a key
that can never be stored would stop its shard."""
_KEY_CHARS_SURELY_FINE = MAX_KEY_BYTES // 4  # UTF-8 needs at most 4 bytes a character


@dataclass(frozen=True, slots=True)
class ShardProgress:
    """What is durable for one (pipeline, shard): the checkpoint and its context.

    ``horizon``: no stored row of this shard has a window starting after it.
    ``dead_letters_through``: dead letters up to this position have been sent.
    ``idle_since_ms``: set while the shard is idle (wall-clock time it was marked): it holds
    no window open. ``watermark_floor``: where the watermark was lifted to when the shard
    woke from idleness, so that windows that became final without it stay final.
    """

    shard_id: str
    checkpoint: Position | None = None
    max_event_time: int | None = None
    horizon: int | None = None
    dead_letters_through: Position | None = None
    ended: bool = False
    idle_since_ms: int | None = None
    watermark_floor: int | None = None

    def watermark(self, allowed_lateness_ms: int) -> int | None:
        floor = self.watermark_floor
        if self.max_event_time is None:
            return floor
        own = self.max_event_time - allowed_lateness_ms
        return own if floor is None or own > floor else floor


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the pipeline could not aggregate, and why."""

    reason: str
    error: str
    pipeline: str
    record: Record
    event_time_ms: int | None = None
    window: Window | None = None
    """For a late record: the first window it missed."""
    missed_windows: tuple[Window, ...] = ()
    """For a late record: every window it missed (hopping windows: it may count in others)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """Written before rows: raises the durable horizon and records sent dead letters."""

    shard_id: str
    horizon: int | None
    dead_letters_through: Position | None


@dataclass(frozen=True)
class FlushPlan:
    """The I/O of one flush, to be carried out in field order, then confirmed."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    intent: Intent | None = None
    rows: list[StoredRow] = field(default_factory=list)
    progress: ShardProgress | None = None
    redrive_claims: dict[str, Position] = field(default_factory=dict)
    """Redriven records this shard counts (processors/windowing/redrive_claims.py), to
    be written with the intent, before the rows."""

    @property
    def empty(self) -> bool:
        return not (
            self.dead_letters or self.intent or self.rows or self.progress or self.redrive_claims
        )


RowLoader = Callable[[Sequence[RowKey]], Iterable[StoredRow]]


def checked_event(
    pipeline: Pipeline[Any], data: bytes, arrival_ms: int | None
) -> tuple[Any, int, str]:
    """(event, event time, key) of ``data`` under ``pipeline``, with the checks every
    pipeline gets, or :class:`InvalidEvent`: exactly what the engine accepts (redrive asks
    the same question before it puts a dead letter back)."""
    event = pipeline.decode(data)
    ts = pipeline.event_time(event)
    key = pipeline.key(event)
    max_future = pipeline.max_future_ms
    if (
        ts < 0
        or len(key) > _KEY_CHARS_SURELY_FINE
        or (max_future is not None and arrival_ms is not None and ts > arrival_ms + max_future)
    ):
        check_guards(pipeline, key, ts, arrival_ms)
    return event, ts, key


def check_guards(pipeline: Pipeline[Any], key: str, ts: int, arrival: int | None) -> None:
    """The checks every pipeline gets; raises :class:`InvalidEvent`."""
    if ts < 0:
        raise InvalidEvent(f"event time {ts} is before the epoch")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidEvent(f"the key is longer than {MAX_KEY_BYTES} bytes")
    max_future = pipeline.max_future_ms
    if max_future is not None and arrival is not None and ts > arrival + max_future:
        raise InvalidEvent(
            f"event time {ts} is {ts - arrival} ms after the record arrived "
            f"(at most {max_future} ms allowed): a producer clock is wrong"
        )


class ShardEngine:
    """Runs one pipeline over one shard. Not thread-safe; one owner at a time."""

    def __init__(self, pipeline: Pipeline[Any], progress: ShardProgress) -> None:
        self.pipeline = pipeline
        self.shard_id = progress.shard_id
        self._durable = progress
        self._position = progress.checkpoint
        self._max_ts = progress.max_event_time
        self._floor = progress.watermark_floor
        self._load_horizon = progress.horizon
        self._rows: dict[RowKey, PartialRow] = {}
        self._pending: list[DeadLetter] = []
        self._broken = False
        self._sent_through = progress.dead_letters_through
        self._specs = pipeline.stored_aggregates
        self._initial = [spec.aggregator.initial() for spec in self._specs]
        # Aggregators whose states change in place (sketches) need a new state per row.
        self._fresh = [
            (index, spec.aggregator.initial)
            for index, spec in enumerate(self._specs)
            if getattr(spec.aggregator, "mutable_state", False)
        ]
        self._fold = compile_fold(self._specs)
        self._max_window_ms = pipeline.windows.size_ms
        self._codec = StateCodec(self._specs, pipeline.windows.describe())
        self.redrive_claims = RedriveClaims(self.shard_id)

    # -- state ----------------------------------------------------------------------

    @property
    def position(self) -> Position | None:
        """The last record applied (durable or not)."""
        return self._position

    @property
    def max_event_time(self) -> int | None:
        return self._max_ts

    @property
    def watermark(self) -> int | None:
        """max event time - allowed lateness, or the floor it was lifted to on waking."""
        return self._watermark(self._max_ts)

    def _watermark(self, max_ts: int | None) -> int | None:
        floor = self._floor
        if max_ts is None:
            return floor
        own = max_ts - self.pipeline.allowed_lateness_ms
        return own if floor is None or own > floor else floor

    @property
    def idle(self) -> bool:
        return self._durable.idle_since_ms is not None

    @property
    def durable(self) -> ShardProgress:
        return self._durable

    @property
    def open_rows(self) -> int:
        return len(self._rows)

    @property
    def has_unflushed(self) -> bool:
        durable = self._durable
        return (
            bool(self._pending)
            or self._position != durable.checkpoint
            or self._sent_through != durable.dead_letters_through
        )

    # -- processing -----------------------------------------------------------------

    def process(
        self,
        records: Sequence[Record],
        load: RowLoader,
        load_claims: ClaimLoader | None = None,
    ) -> None:
        """Load what storage may hold for ``records``, then apply them (in shard order).

        Loading rows matters only after a restart, until the watermark passes the horizon;
        otherwise this is a single pass. ``load_claims`` reads the stored claims of
        redriven records (only asked when a batch holds some).
        """
        if load_claims is not None:
            unknown = self.redrive_claims.unknown(records, self.pipeline.name)
            if unknown:
                self.redrive_claims.learn(load_claims(unknown))
        horizon = self._load_horizon
        if horizon is not None:
            watermark = self.watermark
            if watermark is not None and watermark >= horizon + self._max_window_ms:
                # Every window starting at or before the horizon is closed: no record
                # can touch a stored row any more.
                self._load_horizon = horizon = None
        if horizon is not None:
            wanted = self.rows_to_load(records)
            if wanted:
                self.restore_rows(wanted, load(wanted))
        self.apply(records)

    def rows_to_load(self, records: Sequence[Record]) -> list[RowKey]:
        """Rows ``records`` touch that are not in memory but may be in storage: those whose
        window starts at or before the durable horizon. Does not change the engine."""
        horizon = self._load_horizon
        if horizon is None:
            return []
        pipeline = self.pipeline
        name = pipeline.name
        done = self._position
        wanted: dict[RowKey, None] = {}
        for record in records:
            if done is not None and record.position <= done:
                continue
            if record.only_for is not None and record.only_for != name:
                continue
            try:
                _, ts, key = self._decoded(record)
            except InvalidEvent:
                continue
            for window in pipeline.windows.assign(ts):
                row_key = (key, window.start_ms)
                if window.start_ms <= horizon and row_key not in self._rows:
                    wanted[row_key] = None
        return list(wanted)

    def restore_rows(self, requested: Iterable[RowKey], stored: Iterable[StoredRow]) -> None:
        """Continue from stored rows; requested rows storage does not hold start empty."""
        found = {row.row_key: row for row in stored}
        windows = self.pipeline.windows
        for row_key in requested:
            if row_key in self._rows:
                continue
            row = found.get(row_key)
            if row is None:
                key, start = row_key
                self._rows[row_key] = PartialRow(
                    key, windows.window_starting(start), self._new_states()
                )
            else:
                if row.window != windows.window_starting(row.window.start_ms):
                    raise IncompatibleState(
                        f"stored row {row.key!r} has window [{row.window.start_ms}, "
                        f"{row.window.end_ms}), but {self.pipeline.name} now uses "
                        f"{self.pipeline.windows.describe()} windows: give the changed pipeline "
                        "a new name"
                    )
                states = self._codec.decode(row.state)
                self._rows[row_key] = PartialRow(
                    row.key, row.window, states, row.high_water, stored_through=row.high_water
                )

    def apply(self, records: Sequence[Record]) -> None:
        """Decode and apply records in shard order: aggregate, or dead-letter as invalid
        or late. Records at or before the last one applied are skipped: a reader may
        deliver them again (after a checkpoint inside a KPL aggregate, or a renewed
        iterator)."""
        pipeline = self.pipeline
        name = pipeline.name
        decode, key_of, time_of = pipeline.decode, pipeline.key, pipeline.event_time
        assign = pipeline.windows.assign
        max_future = pipeline.max_future_ms
        rows = self._rows
        fold = self._fold
        new_states = self._new_states
        lateness = pipeline.allowed_lateness_ms
        sent_through = self._durable.dead_letters_through
        max_ts = self._max_ts
        watermark = self._watermark(max_ts)
        floor = self._floor
        done = completed = self._position
        touched = False
        if (
            self._durable.idle_since_ms is not None
            and records
            and (done is None or records[-1].position > done)
        ):
            raise RuntimeError(
                f"shard {self.shard_id} is marked idle: make plan_wake() durable before "
                "applying its records"
            )
        # Records come in shard order, so positions rise within a batch: if its first
        # record is new, all of them are.
        if done is not None and records and records[0].position > done:
            done = None
        try:
            for record in records:
                if done is not None and record.position <= done:
                    continue
                position = record.position
                if record.only_for is not None:
                    if record.only_for != name:
                        # Redriven for another pipeline: done here, like any record. A
                        # broken envelope is no pipeline's: every pipeline dead-letters it.
                        if record.only_for == MALFORMED and (
                            sent_through is None or position > sent_through
                        ):
                            self._pending.append(
                                DeadLetter(
                                    REASON_INVALID, malformed_reason(record.data), name, record
                                )
                            )
                        completed = position
                        continue
                    if record.redrive_id is not None and self.redrive_claims.is_copy(record):
                        completed = position  # another copy of it counts
                        continue
                try:
                    event = decode(record.data)
                    ts = time_of(event)
                    key = key_of(event)
                    arrival = record.arrival_ms
                    if (
                        ts < 0
                        or len(key) > _KEY_CHARS_SURELY_FINE
                        or (
                            max_future is not None
                            and arrival is not None
                            and ts > arrival + max_future
                        )
                    ):
                        check_guards(pipeline, key, ts, arrival)
                except InvalidEvent as exc:
                    if sent_through is None or position > sent_through:
                        self._pending.append(DeadLetter(REASON_INVALID, str(exc), name, record))
                    completed = position
                    continue
                missed: list[Window] | None = None
                for window in assign(ts):
                    if watermark is not None and window.end_ms <= watermark:
                        missed = [window] if missed is None else [*missed, window]
                        continue
                    row_key = (key, window.start_ms)
                    row = rows.get(row_key)
                    if row is None:
                        row = rows[row_key] = PartialRow(key, window, new_states())
                    elif row.stored_through is not None and position <= row.stored_through:
                        continue  # already included in the stored row: a replay
                    touched = True
                    fold(row.states, event)
                    row.high_water = position
                    row.dirty = True
                if missed is not None and (sent_through is None or position > sent_through):
                    self._pending.append(self._late(record, ts, missed, watermark))
                if max_ts is None or ts > max_ts:
                    max_ts = ts
                    watermark = ts - lateness
                    if floor is not None and floor > watermark:
                        watermark = floor
                completed = position
                touched = False
        except BaseException:
            if touched:
                # Some of the record's windows took it and some did not: the state no
                # longer matches any position. Only a restart from the checkpoint recovers.
                self._broken = True
            raise
        finally:
            self._position = completed
            self._max_ts = max_ts

    def _new_states(self) -> list[Any]:
        states = self._initial.copy()
        for index, initial in self._fresh:
            states[index] = initial()
        return states

    def _decoded(self, record: Record) -> tuple[Any, int, str]:
        """(event, event time, key), or :class:`InvalidEvent`: exactly the checks ``apply``
        makes inline (tests/unit/test_engine_guards.py checks that the two agree)."""
        return checked_event(self.pipeline, record.data, record.arrival_ms)

    def _late(
        self, record: Record, ts: int, missed: list[Window], watermark: int | None
    ) -> DeadLetter:
        first = missed[0]
        more = f" and {len(missed) - 1} later windows" if len(missed) > 1 else ""
        what = "session bucket" if isinstance(self.pipeline.windows, SessionWindows) else "window"
        return DeadLetter(
            REASON_LATE,
            f"event time {ts} is in {what} [{first.start_ms}, {first.end_ms}){more}, already "
            f"closed on shard {self.shard_id} (watermark {watermark})",
            self.pipeline.name,
            record,
            event_time_ms=ts,
            window=first,
            missed_windows=tuple(missed),
        )

    # -- flushing -------------------------------------------------------------------

    def plan_flush(self, ended: bool = False) -> FlushPlan:
        """What to write, in order, to make everything applied so far durable."""
        if self._broken:
            raise RuntimeError(
                f"shard {self.shard_id}: an error in the middle of a record left the state "
                "inconsistent; restart from the last checkpoint"
            )
        durable = self._durable
        dead_letters = list(self._pending)
        horizon = durable.horizon
        if self._max_ts is not None and (horizon is None or self._max_ts > horizon):
            horizon = self._max_ts + HORIZON_STEP_MS
        sent_through = self._position if dead_letters else self._sent_through
        intent = None
        if horizon != durable.horizon or sent_through != durable.dead_letters_through:
            intent = Intent(self.shard_id, horizon, sent_through)
        encode = self._codec.encode
        rows = [
            StoredRow(
                self.pipeline.name,
                row.key,
                row.window,
                self.shard_id,
                row.high_water,
                encode(row.states),
            )
            for row in self._rows.values()
            if row.dirty and row.high_water is not None
        ]
        progress = ShardProgress(
            self.shard_id,
            checkpoint=self._position,
            max_event_time=self._max_ts,
            horizon=horizon,
            dead_letters_through=sent_through,
            ended=ended or durable.ended,
            idle_since_ms=durable.idle_since_ms,
            watermark_floor=self._floor,
        )
        claims = self.redrive_claims.pending()
        if progress == durable and not rows and not dead_letters and not claims:
            return FlushPlan()
        return FlushPlan(dead_letters, intent, rows, progress, claims)

    def dead_letters_sent(self, plan: FlushPlan) -> None:
        """The plan's dead letters are delivered: a retried flush must not send them again.
        Idempotent."""
        count = len(plan.dead_letters)
        if count and self._pending[:count] == plan.dead_letters:
            del self._pending[:count]
            assert plan.progress is not None
            self._sent_through = plan.progress.dead_letters_through

    def confirm_flush(self, plan: FlushPlan) -> None:
        """Everything in ``plan`` is durable: clear dirty rows and release closed windows."""
        if plan.progress is None:
            return
        self.dead_letters_sent(plan)
        self.redrive_claims.confirm(plan.redrive_claims)
        for stored in plan.rows:
            row = self._rows.get(stored.row_key)
            if row is not None and row.high_water == stored.high_water:
                row.dirty = False
        self._durable = replace(plan.progress)
        self._floor = plan.progress.watermark_floor
        watermark = self.watermark
        if watermark is not None:
            closed = [
                row_key
                for row_key, row in self._rows.items()
                if not row.dirty and row.window.end_ms <= watermark
            ]
            for row_key in closed:
                del self._rows[row_key]

    # -- idleness --------------------------------------------------------------------

    def plan_idle(self, now_ms: int) -> FlushPlan:
        """Mark the shard idle (``now_ms`` is wall-clock time, for people reading the
        progress): from then on it holds no window open (see
        :func:`processors.windowing.results.final_frontier`). Only once everything applied is
        durable, so its rows are complete when windows become final without it."""
        if self.has_unflushed or self._broken:
            raise RuntimeError(f"shard {self.shard_id}: flush before marking it idle")
        if self.idle:
            return FlushPlan()
        return FlushPlan(progress=replace(self._durable, idle_since_ms=now_ms))

    def plan_wake(self, frontier: int | None) -> FlushPlan:
        """The progress to make durable before an idle shard applies records again.

        ``frontier`` is the final frontier of the pipeline's shards now: every window
        ending at or before it may have been reported final without this shard. The
        shard's watermark is lifted to it, so its events for those windows are late, and
        since the floor is durable before any record is applied, a replay after a crash
        decides exactly as the first run did.

        Called again after the wake is durable, and before any record is applied, it
        raises the floor further (another worker may have marked a shard idle between
        reading the frontier and writing the floor: see streams/shard_work.wake)."""
        if not self.idle and self._position != self._durable.checkpoint:
            return FlushPlan()  # records were applied since: too late to move the floor
        floor = self._floor
        if frontier is not None and (floor is None or frontier > floor):
            floor = frontier
        if not self.idle and floor == self._floor:
            return FlushPlan()
        return FlushPlan(progress=replace(self._durable, idle_since_ms=None, watermark_floor=floor))

    def snapshot(self) -> Mapping[RowKey, PartialRow]:
        """The rows in memory (for tests and the live view); do not mutate."""
        return self._rows
