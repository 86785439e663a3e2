"""What ``shardflow dead-letters --redrive`` did, counted letter by letter, its summary and
its exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.windowing.engine import REASON_INVALID

SHOWN = 5
"""How many letters each line of the summary lists."""


@dataclass
class RedriveReport:
    """What a redrive did. Records are counted once each: a plain letter is one record,
    a letter holding a KPL aggregate one per user record (``<dead_letter_id>/<index>``)."""

    pipeline: str
    reason: str = REASON_INVALID
    allowed_lateness_ms: int | None = None
    sent: int = 0
    resent: int = 0
    """Of ``sent``: an earlier redrive had claimed them and stopped before Kinesis confirmed
    them (they may be in the stream twice now: the pipeline counts one copy)."""
    already_sent: int = 0
    """The ledger had them as sent (by an earlier, interrupted redrive): deleted only."""
    duplicates: int = 0
    """More copies of letters sent back in this run, met in the queue: deleted."""
    copies_left: int = 0
    """More copies of letters left in this run: left with them."""
    still_invalid: list[tuple[str, str]] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    final: list[tuple[str, str]] = field(default_factory=list)
    """Letters whose windows are all final on the shard they would land on."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    not_deleted: int = 0
    """Sent, but the message could not be deleted: the next redrive deletes it."""
    skipped: int = 0
    """Messages of other pipelines or reasons, and messages that are no dead letter."""
    examined: int = 0
    """Distinct messages received."""
    stopped: str | None = None
    """Why the run stopped before a receive brought nothing new."""
    unexamined: int | None = None
    """Messages the queue reported at the end beyond those the run saw and left there
    (None: unknown)."""

    @property
    def left(self) -> int:
        """Eligible records examined and still in the queue after this run."""
        return (
            len(self.still_invalid)
            + len(self.cut)
            + len(self.final)
            + len(self.failed)
            + len(self.errors)
        )

    @property
    def incomplete(self) -> list[str]:
        """Why eligible letters may remain that this run did not look at."""
        out = [self.stopped] if self.stopped else []
        if self.unexamined is None:
            out.append("could not read how many messages the queue holds: run again to be sure")
        elif self.unexamined > 0:
            out.append(
                f"the queue reports {self.unexamined} more messages than this run saw and left "
                "there (sent since it started, or not handed out by SQS; its counts may also "
                "lag a little behind deletes): run again"
            )
        return out

    @property
    def exit_code(self) -> int:
        """0 when every eligible letter was handled, 1 when some are (or may be) left."""
        return 1 if self.left or self.not_deleted or self.incomplete else 0

    def lines(self) -> list[str]:
        """The summary, for people: counts, the first few letters of each kind left, and
        what the kinds mean when there are any."""
        out = [f"redrive of {self.pipeline} ({self.reason} letters)"]

        def count(label: str, value: int, note: str = "", shown: Sequence[str] = ()) -> None:
            out.append(f"{label:<18}{value}" + (f"  ({note})" if note and value else ""))
            out.extend(f"  {item}" for item in shown[:SHOWN])
            if len(shown) > SHOWN:
                out.append(f"  ... and {len(shown) - SHOWN} more")

        def pairs(items: Sequence[tuple[str, str]]) -> list[str]:
            return [f"{letter}: {why}" for letter, why in items]

        lateness = (
            f"{self.pipeline} allows {self.allowed_lateness_ms / 1000:g} s of lateness"
            if self.allowed_lateness_ms is not None
            else "see the pipeline's allowed lateness"
        )
        count(
            "sent back",
            self.sent,
            "removed from the queue"
            + (
                f"; {self.resent} sent again: an earlier put had no clear outcome, the "
                "pipeline counts one copy"
                if self.resent
                else ""
            ),
        )
        count("already sent", self.already_sent, "sent by an interrupted redrive; removed now")
        count(
            "still invalid", len(self.still_invalid), "left in the queue", pairs(self.still_invalid)
        )
        count(
            "window final",
            len(self.final),
            "every window of the event is already final on the shard it would land on: put "
            "back, it would come back late. Left in the queue: final windows never change; "
            f"{lateness}, a pipeline whose fixes must be redriven later needs a longer one",
            pairs(self.final),
        )
        count(
            "cut",
            len(self.cut),
            "the letters hold only a prefix of their record, which stays in the stream at "
            "the shard and sequence they name: left in the queue",
            self.cut,
        )
        count(
            "put failed",
            len(self.failed),
            "left in the queue; the next redrive sends them again, and the pipeline counts "
            "one copy of each",
            pairs(self.failed),
        )
        if self.errors:
            count("errors", len(self.errors), "left in the queue", pairs(self.errors))
        if self.duplicates:
            count("duplicates", self.duplicates, "more copies of letters sent back: removed")
        if self.copies_left:
            count("copies left", self.copies_left, "more copies of letters left: left too")
        if self.not_deleted:
            count("not deleted", self.not_deleted, "sent; the next redrive removes them")
        count("other letters", self.skipped, "other pipelines or reasons: untouched")
        out.extend(f"not finished: {why}" for why in self.incomplete)
        out.append(
            "note: redrive recovers events whose windows are still open; final windows never "
            "change, so an event whose windows are final stays in the queue"
        )
        return out
