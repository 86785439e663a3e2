"""The seams between the core and storage. Adapters: DynamoDB/SQS, and in-memory fakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from processors.windowing.engine import DeadLetter, Intent, ShardProgress
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


class DeadLetterSink(Protocol):
    """Where records that cannot be aggregated go, with their reason."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Deliver every letter durably, or raise."""
        ...
