"""The seams between the core and storage. Adapters: DynamoDB/SQS, and in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from processors.alerts import Alert
from processors.windowing.engine import DeadLetter, Intent, ShardProgress
from processors.windowing.finals import FinalRow
from processors.windowing.records import Position
from processors.windowing.redrive_claims import Claim
from processors.windowing.rows import RowKey, StoredRow


class StaleWrite(Exception):
    """A conditional write found newer state: another worker owns this shard now."""


class StreamMismatch(Exception):
    """The table holds this pipeline's progress for a different stream (or for an earlier
    stream of the same name): continuing would mix unrelated sequence numbers."""

    def __init__(self, pipeline: str, stored: str, given: str) -> None:
        super().__init__(
            f"the results table holds {pipeline} progress for stream {stored}, not {given}: "
            "use another --table (or pipeline), or delete that pipeline's items first"
        )


class PartialStore(Protocol):
    """Partial rows and per-shard progress for every pipeline.

    Writes are conditional: a row is replaced only by one whose high-water position is at
    least the stored one, and a checkpoint never moves back. A violation raises
    :class:`StaleWrite`.
    """

    def register_shard(
        self, pipeline: str, stream: str, shard_id: str, watermark_floor: int | None = None
    ) -> ShardProgress:
        """The shard's durable progress, creating an empty record for a new shard.

        ``stream`` identifies the stream (name, or ARN and creation time); a shard already
        registered for another stream raises :class:`StreamMismatch`. A new shard starts
        with ``watermark_floor`` (a child of a resharded shard starts at what is already
        final, so that its registration cannot make a final window open again); an
        existing one keeps its progress.
        """
        ...

    def write_intent(self, pipeline: str, stream: str, intent: Intent) -> None: ...

    def load_rows(self, pipeline: str, shard_id: str, keys: Sequence[RowKey]) -> list[StoredRow]:
        """The stored rows among ``keys`` (strongly consistent reads)."""
        ...

    def write_rows(self, rows: Sequence[StoredRow]) -> None: ...

    def write_progress(self, pipeline: str, stream: str, progress: ShardProgress) -> None: ...

    def read_rows(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
    ) -> list[StoredRow]:
        """Partial rows of ``pipeline`` (of one key, if given) whose window start lies in
        ``[start_from_ms, start_before_ms)``."""
        ...

    def read_progress(self, pipeline: str) -> list[ShardProgress]:
        """Every registered shard's progress for ``pipeline``."""
        ...

    def load_redrive_claims(self, pipeline: str, redrive_ids: Sequence[str]) -> dict[str, Claim]:
        """The stored claims among ``redrive_ids`` (strongly consistent reads)."""
        ...

    def write_redrive_claims(
        self, pipeline: str, shard_id: str, claims: Mapping[str, Position]
    ) -> None:
        """Claim redriven records for ``shard_id`` (processors/windowing/redrive_claims.py).
        Rewriting a claim with the same shard and position is a no-op; a claim another
        shard holds is left as it is (reported in the log: that copy was counted too)."""
        ...


class FinalStore(Protocol):
    """Final rows, the window index the finalizer walks, its cursor, and sent alerts.

    The index is written with the partial rows (before the progress that lets a window
    become final), so that every partial row of a final window can be found with
    strongly consistent reads.
    """

    def finalized_through(self, pipeline: str) -> int | None:
        """The finalizer's cursor: windows starting before it have their final rows."""
        ...

    def set_finalized_through(self, pipeline: str, through: int) -> None:
        """Move the cursor forward (never back; a lower value is ignored)."""
        ...

    def backfill_index(self, pipeline: str) -> int:
        """Index the pipeline's partial rows written before the index existed (a Scan,
        page by page, once per pipeline); returns how many rows it saw."""
        ...

    def window_starts(self, pipeline: str, start_from_ms: int, start_before_ms: int) -> list[int]:
        """Starts of the windows that have partial rows, in ``[from, before)``, ascending."""
        ...

    def window_rows(self, pipeline: str, window_start_ms: int) -> list[StoredRow]:
        """Every partial row of the windows starting at ``window_start_ms``."""
        ...

    def window_keys(self, pipeline: str, window_start_ms: int) -> list[str]:
        """The keys with partial rows in the window starting at ``window_start_ms``,
        sorted (the index alone: one Query)."""
        ...

    def latest_window_start(self, pipeline: str, start_before_ms: int) -> int | None:
        """The latest start of a window with partial rows, before ``start_before_ms``
        (None: there is none). One read, however many windows there are."""
        ...

    def write_finals(self, rows: Sequence[FinalRow], expires_at: int | None) -> list[FinalRow]:
        """Write each final row unless it exists; returns the rows as stored (a row that
        existed is returned as it was). ``expires_at``: epoch seconds, or None."""
        ...

    def write_top_keys(
        self,
        pipeline: str,
        window_start_ms: int,
        window_end_ms: int,
        top: Mapping[str, Sequence[tuple[str, float]]],
        keys: int,
        expires_at: int | None,
    ) -> None:
        """The top keys of one final window, per aggregate."""
        ...

    def read_top_keys(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> list[tuple[str, float]] | None:
        """The stored top keys of a final window by ``aggregate`` (None: not stored)."""
        ...

    def read_top(
        self, pipeline: str, window_start_ms: int, aggregate: str
    ) -> tuple[list[tuple[str, float]], int] | None:
        """:meth:`read_top_keys`, with how many keys the window has."""
        ...

    def expire_partials(self, rows: Sequence[StoredRow], expires_at: int) -> None:
        """Let partial rows covered by final rows expire at ``expires_at``."""
        ...

    def read_finals(
        self,
        pipeline: str,
        key: str | None = None,
        start_from_ms: int | None = None,
        start_before_ms: int | None = None,
        with_states: bool = True,
    ) -> list[FinalRow]:
        """Final rows of ``pipeline`` (of one key, if given) whose window start lies in
        ``[start_from_ms, start_before_ms)``. ``with_states=False`` may leave out the
        merged states (``state`` empty): what a reader of the values needs."""
        ...

    def unsent_alerts(self, pipeline: str, alert_ids: Sequence[str]) -> set[str]:
        """The ids among ``alert_ids`` with no record of being sent."""
        ...

    def record_alerts_sent(
        self,
        pipeline: str,
        alerts: Sequence[Alert],
        expires_at: int | None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        """Record ``alerts`` as handled: sent, or refused for good (``refused``: the
        reason by alert id)."""
        ...


class DeadLetterSink(Protocol):
    """Where records that cannot be aggregated go, with their reason."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Deliver every letter durably, or raise."""
        ...


class AlertSink(Protocol):
    """Where alerts on final windows go."""

    def publish(self, alerts: Sequence[Alert]) -> list[tuple[Alert, str]]:
        """Deliver every alert, or raise (then none of them is known to be delivered).
        Returns the alerts refused for good (a message that cannot be valid), with the
        reason: those are not tried again."""
        ...
