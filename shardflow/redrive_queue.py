"""The dead-letter queue as a redrive run sees it: each message examined once, held only
while it must be, and the run bounded.

- A receive hides its messages for :data:`VISIBILITY_S`; the run extends the hold of what
  it keeps (:meth:`RunQueue.keep_alive`, ChangeMessageVisibilityBatch) before it runs
  out, however long the run lasts, and gives everything it holds back when it ends.
- A message the run does not take (another pipeline's or reason's, or past ``--limit``)
  is given back at once (visibility 0) so that other readers have it; if a receive brings
  it again, the run holds it until it ends, so it does not crowd out the messages not
  seen yet. Every receive raises a message's ``ApproximateReceiveCount``.
- Message ids seen are remembered: a receive that brings no message not seen before is
  *quiet*, and long-polls (SQS then asks all its servers).
- :meth:`RunQueue.depth` is what the queue reports (visible + in flight): at the start it
  bounds the run; at the end, more than the messages the run saw and left there means
  some were not examined (sent meanwhile, or never handed out: SQS samples its servers).
  The counts are approximate and may lag a little behind the run's own deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("shardflow.redrive")

VISIBILITY_S = 300
"""How long a received message stays hidden from other readers, each time it is held."""
EXTEND_BEFORE_S = 100.0
"""A held message whose hold ends within this many seconds is held again for
:data:`VISIBILITY_S`."""
WAIT_S = 2
"""Long polling on quiet receives: SQS asks all its servers, so an empty answer means
nothing more is visible."""


@dataclass(frozen=True)
class Message:
    message_id: str
    body: str


class RunQueue:
    """Receives, deletes, holds and gives back one run's messages."""

    def __init__(self, sqs: Any, url: str, clock: Callable[[], float]) -> None:
        self._sqs = sqs
        self._url = url
        self._clock = clock
        self.seen: set[str] = set()
        """Every message id received in this run."""
        self._receipts: dict[str, str] = {}
        """Latest receipt handle of every message received and not deleted."""
        self._held_until: dict[str, float] = {}
        """Messages this run holds, and when their hold ends (by ``clock``)."""
        self._given_back: set[str] = set()
        self.deleted = 0

    @property
    def still_there(self) -> int:
        """Messages seen in this run and not deleted by it."""
        return len(self.seen) - self.deleted

    @property
    def held(self) -> int:
        return len(self._held_until)

    def depth(self) -> int:
        """Messages in the queue, visible or in flight, as SQS reports them (approximate:
        a count may lag a few seconds behind sends and deletes)."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
            attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

    def receive(self, wait: bool) -> list[Message]:
        """Up to 10 messages not seen before in this run (held until handled). A message
        seen before that comes back is held again, until the run ends."""
        response = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=VISIBILITY_S,
            WaitTimeSeconds=WAIT_S if wait else 0,
        )
        until = self._clock() + VISIBILITY_S
        new = []
        for message in response.get("Messages", []):
            message_id = message["MessageId"]
            self._receipts[message_id] = message["ReceiptHandle"]
            self._held_until[message_id] = until
            if message_id not in self.seen:
                self.seen.add(message_id)
                new.append(Message(message_id, message["Body"]))
        return new

    def delete(self, message_id: str) -> bool:
        try:
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=self._receipts[message_id])
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete message %s: %s", message_id, exc)
            return False
        del self._receipts[message_id]
        self._held_until.pop(message_id, None)
        self.deleted += 1
        return True

    def give_back(self, message_ids: Iterable[str]) -> None:
        """Visible again at once (messages received for the first time: once seen twice,
        a message stays held until :meth:`give_back_all`)."""
        ids = [m for m in message_ids if m in self._held_until and m not in self._given_back]
        self._given_back.update(ids)
        self._change(ids, 0)

    def give_back_all(self) -> None:
        self._change(list(self._held_until), 0)

    def keep_alive(self) -> None:
        """Hold again every held message whose hold is about to end."""
        now = self._clock()
        due = [m for m, until in self._held_until.items() if until - now < EXTEND_BEFORE_S]
        self._change(due, VISIBILITY_S)

    def _change(self, message_ids: list[str], timeout: int) -> None:
        """ChangeMessageVisibilityBatch, 10 a call. A message whose hold could not be
        changed is no longer held by this run (given back, its hold ends on its own)."""
        until = self._clock() + timeout
        for start in range(0, len(message_ids), 10):
            chunk = message_ids[start : start + 10]
            entries = [
                {"Id": str(n), "ReceiptHandle": self._receipts[m], "VisibilityTimeout": timeout}
                for n, m in enumerate(chunk)
            ]
            try:
                response = self._sqs.change_message_visibility_batch(
                    QueueUrl=self._url, Entries=entries
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not change the visibility of %d messages: %s", len(chunk), exc)
                failed = set(range(len(chunk)))
            else:
                failed = {int(f["Id"]) for f in response.get("Failed", [])}
                for failure in response.get("Failed", []):
                    log.warning(
                        "could not change the visibility of message %s: %s",
                        chunk[int(failure["Id"])],
                        failure.get("Message") or failure.get("Code"),
                    )
            for n, message_id in enumerate(chunk):
                if timeout and n not in failed:
                    self._held_until[message_id] = until
                else:
                    self._held_until.pop(message_id, None)
