"""What ``shardflow dead-letters --redrive`` did, counted letter by letter, and its summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.windowing.engine import REASON_INVALID

SHOWN = 5
"""How many letters each line of the summary lists."""


@dataclass
class RedriveReport:
    """What a redrive did, letter by letter counted once."""

    pipeline: str
    reason: str = REASON_INVALID
    sent: int = 0
    already_sent: int = 0
    """The ledger had them as sent (before a crash): deleted, not put again."""
    duplicates: int = 0
    """Second copies of a letter in the queue, deleted with the first."""
    still_invalid: list[tuple[str, str]] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    not_deleted: int = 0
    """Sent, but the message could not be deleted: the next redrive deletes it."""
    skipped: int = 0
    """Letters of other pipelines or reasons, and messages that are no dead letter."""

    @property
    def left(self) -> int:
        """Eligible letters still in the queue after this run."""
        return len(self.still_invalid) + len(self.cut) + len(self.uncertain) + len(self.failed)

    def lines(self) -> list[str]:
        """The summary, for people: counts, the first few letters of each kind left, and
        what the kinds mean when there are any."""
        out = [f"redrive of {self.pipeline} ({self.reason} letters)"]

        def count(label: str, value: int, note: str = "", shown: Sequence[str] = ()) -> None:
            out.append(f"{label:<18}{value}" + (f"  ({note})" if note and value else ""))
            out.extend(f"  {item}" for item in shown[:SHOWN])
            if len(shown) > SHOWN:
                out.append(f"  ... and {len(shown) - SHOWN} more")

        count("sent back", self.sent, "removed from the queue")
        count("already sent", self.already_sent, "sent by an interrupted redrive; removed now")
        count(
            "still invalid",
            len(self.still_invalid),
            "left in the queue",
            [f"{letter}: {error}" for letter, error in self.still_invalid],
        )
        count(
            "cut",
            len(self.cut),
            "the letters hold only a prefix of their record, which stays in the stream at "
            "the shard and sequence they name: left in the queue",
            self.cut,
        )
        count(
            "uncertain",
            len(self.uncertain),
            "an earlier redrive stopped while putting these, so they may be in the stream "
            "already: left in the queue; --resend-uncertain sends them anyway",
            self.uncertain,
        )
        count(
            "put failed",
            len(self.failed),
            "left in the queue",
            [f"{letter}: {error}" for letter, error in self.failed],
        )
        if self.duplicates:
            count("duplicates", self.duplicates, "second copies of letters sent: removed")
        if self.not_deleted:
            count("not deleted", self.not_deleted, "sent; the next redrive removes them")
        count("other letters", self.skipped, "other pipelines or reasons: untouched")
        out.append(
            "note: a redriven event whose window has already closed on its shard comes back as "
            "a late dead letter (a shard's watermark never goes back; final windows never change)"
        )
        return out
