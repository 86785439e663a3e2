"""Counting each redriven record once. Pure.

``shardflow dead-letters --redrive`` puts a rejected event back into the stream in an
envelope that carries its dead letter id. A put whose answer was lost is sent again, and a
redrive that stopped part-way sends its letters again, so the stream may hold several
copies. The first copy a shard applies *claims* the id: the claim (id → shard and
position) is made durable in the same flush, before the rows that count it. Any other
copy, on any shard, is then skipped; the claimed copy itself, read again after a crash,
is not (it is the one that counts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from processors.windowing.records import Position, Record

Claim = tuple[str, Position]
"""(shard id, position) of the copy that counts."""

ClaimLoader = Callable[[Sequence[str]], Mapping[str, Claim]]


class RedriveClaims:
    """One shard's view of the claims of its pipeline's redriven records."""

    def __init__(self, shard_id: str) -> None:
        self.shard_id = shard_id
        self._known: dict[str, Claim] = {}
        self._pending: dict[str, Position] = {}
        self.copies_skipped = 0

    def unknown(self, records: Iterable[Record], pipeline: str) -> list[str]:
        """Ids of ``pipeline``'s redriven records whose claims are not known here yet."""
        return sorted(
            {
                record.redrive_id
                for record in records
                if record.redrive_id is not None
                and record.only_for == pipeline
                and record.redrive_id not in self._known
            }
        )

    def learn(self, stored: Mapping[str, Claim]) -> None:
        self._known.update(stored)

    def is_copy(self, record: Record) -> bool:
        """True for a copy to skip; otherwise the record counts, and claims its id."""
        redrive_id = record.redrive_id
        assert redrive_id is not None
        claim = self._known.get(redrive_id)
        if claim is None:
            self._known[redrive_id] = (self.shard_id, record.position)
            self._pending[redrive_id] = record.position
            return False
        if claim == (self.shard_id, record.position):
            return False
        self.copies_skipped += 1
        return True

    def pending(self) -> dict[str, Position]:
        """Claims made since the last flush, to write before the rows."""
        return dict(self._pending)

    def confirm(self, written: Mapping[str, Position]) -> None:
        for redrive_id, position in written.items():
            if self._pending.get(redrive_id) == position:
                del self._pending[redrive_id]
