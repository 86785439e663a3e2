"""An in-memory Kinesis stream for the producer's tests: ListShards and PutRecords, with
real hash key ranges, resharding, fault injection, and a record of everything.

- Shards split ``0 .. 2**128 - 1`` evenly. ``split``/``split_all`` close shards (they get
  an ending sequence number, as ListShards reports them) and add two children.
- ``put_records`` places every entry as Kinesis does, by its ``ExplicitHashKey`` or the
  MD5 of its ``PartitionKey``, into the open shard whose range holds it, and answers with
  that shard and a sequence number. It checks the request as Kinesis does (500 records,
  5 MiB, 1 MiB a record, key rules) and raises ``ValidationException`` otherwise.
- Faults: ``entry_fault(call, entry)`` gives an ``ErrorCode`` for an entry (or None);
  ``call_fault(call, entries)`` gives an exception for the whole call (or None). Whole-call
  faults happen before anything lands. Ready-made rules: :func:`fail_keys`,
  :func:`random_entry_faults`, :func:`random_call_faults`, :func:`raise_in_turn`.
- ``calls`` holds every PutRecords call (entries, time, outcome); ``landed`` every record
  that landed, in landing order; :meth:`FakePutKinesis.user_records` reads them back,
  deaggregating KPL aggregates with :func:`streams.kpl.decode_aggregate`.

Thread-safe: one lock around all state. ``gate`` (a cleared :class:`threading.Event`)
holds PutRecords calls before they are handled, to keep records in flight.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from streams.kpl import UserRecord, decode_aggregate
from streams.shard_map import MAX_HASH_KEY, ShardMap

STREAM = "clickstream"
THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL = "InternalFailure"
ENTRY_MESSAGES = {
    THROTTLED: "Rate exceeded for shard in stream clickstream under account 000000000000.",
    INTERNAL: "Internal service failure.",
}
MAX_ENTRIES = 500
MAX_CALL_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024

EntryFault = Callable[[int, Mapping[str, Any]], "str | None"]
"""(call number from 0, the entry as sent) -> an ErrorCode to fail the entry with, or None."""
CallFault = Callable[[int, Sequence[Mapping[str, Any]]], "BaseException | None"]
"""(call number, the entries) -> an exception for the whole call to raise, or None."""


# -- errors as botocore raises them ---------------------------------------------------------


def client_error(
    code: str, status: int = 400, message: str = "injected", operation: str = "PutRecords"
) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


def throttling_error() -> ClientError:
    return client_error(THROTTLED, 400, "Rate exceeded for stream clickstream")


def server_error(code: str = "InternalFailure", status: int = 500) -> ClientError:
    return client_error(code, status, "We encountered an internal error. Please try again.")


def access_denied() -> ClientError:
    return client_error("AccessDeniedException", 400, "User is not authorized to PutRecords")


def kms_disabled() -> ClientError:
    return client_error("KMSDisabledException", 400, "The KMS key is disabled")


def not_found(operation: str = "PutRecords") -> ClientError:
    return client_error("ResourceNotFoundException", 400, "Stream clickstream not found", operation)


def connection_error() -> EndpointConnectionError:
    return EndpointConnectionError(endpoint_url="https://kinesis.us-east-1.amazonaws.com")


# -- what the fake keeps ---------------------------------------------------------------------


def md5_hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def effective_hash_key(record: UserRecord) -> int:
    """Where Kinesis (for a plain record) or the KCL (for a user record of an aggregate)
    puts ``record``: its explicit hash key, else the MD5 of its partition key."""
    if record.explicit_hash_key is not None:
        return int(record.explicit_hash_key)
    return md5_hash_key(record.partition_key)


@dataclass
class FakeShard:
    shard_id: str
    start: int
    end: int
    starting_sequence: int
    parent: str | None = None
    adjacent_parent: str | None = None
    ending_sequence: int | None = None

    @property
    def open(self) -> bool:
        return self.ending_sequence is None

    def holds(self, hash_key: int) -> bool:
        return self.start <= hash_key <= self.end

    def describe(self) -> dict[str, Any]:
        shard: dict[str, Any] = {
            "ShardId": self.shard_id,
            "HashKeyRange": {"StartingHashKey": str(self.start), "EndingHashKey": str(self.end)},
            "SequenceNumberRange": {"StartingSequenceNumber": str(self.starting_sequence)},
        }
        if self.parent is not None:
            shard["ParentShardId"] = self.parent
        if self.adjacent_parent is not None:
            shard["AdjacentParentShardId"] = self.adjacent_parent
        if self.ending_sequence is not None:
            shard["SequenceNumberRange"]["EndingSequenceNumber"] = str(self.ending_sequence)
        return shard


@dataclass(frozen=True)
class Landed:
    """One Kinesis record that a shard accepted."""

    shard_id: str
    sequence_number: str
    partition_key: str
    explicit_hash_key: str | None
    data: bytes
    call: int
    at: float
    users: tuple[UserRecord, ...]
    """The user records inside (decoded once, on landing)."""
    aggregated: bool

    @property
    def size(self) -> int:
        """What counts against Kinesis's limits: data and partition key."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))

    def user_records(self) -> list[UserRecord]:
        """The user records inside (one for a plain record), as a KCL consumer sees them."""
        return list(self.users)


@dataclass(frozen=True)
class Call:
    """One PutRecords call as it arrived, and what came of it."""

    index: int
    at: float
    stream: str
    entries: list[dict[str, Any]]
    raised: BaseException | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    users: list[list[UserRecord]] = field(default_factory=list)
    """Each entry's user records (one for a plain record)."""

    @property
    def size(self) -> int:
        return sum(entry_size(e) for e in self.entries)

    @property
    def error_codes(self) -> list[str]:
        return [r["ErrorCode"] for r in self.results if "ErrorCode" in r]


@dataclass(frozen=True)
class ReadBack:
    """One user record read back from a shard."""

    landed: Landed
    sub_sequence_number: int
    record: UserRecord


def entry_size(entry: Mapping[str, Any]) -> int:
    return len(entry["Data"]) + len(str(entry["PartitionKey"]).encode("utf-8"))


def even_ranges(count: int) -> list[tuple[int, int]]:
    """``count`` ranges that split the hash key space evenly, as CreateStream does."""
    step = (MAX_HASH_KEY + 1) // count
    starts = [i * step for i in range(count)]
    ends = [s - 1 for s in starts[1:]] + [MAX_HASH_KEY]
    return list(zip(starts, ends, strict=True))


class FakePutKinesis:
    """The producer's side of one Kinesis stream. See the module docstring."""

    def __init__(
        self,
        shards: int = 2,
        *,
        stream: str = STREAM,
        entry_fault: EntryFault | None = None,
        call_fault: CallFault | None = None,
        page_size: int | None = None,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.entry_fault = entry_fault
        self.call_fault = call_fault
        self.page_size = page_size
        self.latency_s = latency_s
        self.clock = clock
        self.exists = True
        self.lock = threading.RLock()
        self.gate = threading.Event()
        self.gate.set()
        self.shards: dict[str, FakeShard] = {}
        self.calls: list[Call] = []
        self.landed: list[Landed] = []
        self.list_shards_calls = 0
        self._by_sequence: dict[tuple[str, str], Landed] = {}
        self._sequence = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000
        self._next_shard = 0
        for start, end in even_ranges(shards):
            self._add_shard(start, end)

    # -- shards ---------------------------------------------------------------------------

    def _add_shard(
        self, start: int, end: int, parent: str | None = None, adjacent: str | None = None
    ) -> FakeShard:
        shard = FakeShard(
            f"shardId-{self._next_shard:012d}", start, end, self._next_sequence(), parent, adjacent
        )
        self._next_shard += 1
        self.shards[shard.shard_id] = shard
        return shard

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def open_shards(self) -> list[FakeShard]:
        with self.lock:
            return sorted((s for s in self.shards.values() if s.open), key=lambda s: s.start)

    def shard_map(self) -> ShardMap:
        """The open shards, as the producer would list them now."""
        with self.lock:
            return ShardMap.from_shards(s.describe() for s in self.shards.values())

    def owner(self, hash_key: int) -> FakeShard:
        with self.lock:
            return next(s for s in self.open_shards() if s.holds(hash_key))

    def split(self, shard_id: str, at: int | None = None) -> tuple[str, str]:
        """SplitShard: close ``shard_id``; two children take ``[start, at-1]`` and
        ``[at, end]`` (``at`` defaults to the middle)."""
        with self.lock:
            parent = self.shards[shard_id]
            assert parent.open, f"{shard_id} is closed"
            at = (parent.start + parent.end + 1) // 2 if at is None else at
            assert parent.start < at <= parent.end
            parent.ending_sequence = self._next_sequence()
            low = self._add_shard(parent.start, at - 1, parent=shard_id)
            high = self._add_shard(at, parent.end, parent=shard_id)
            return low.shard_id, high.shard_id

    def split_all(self) -> None:
        with self.lock:
            for shard in self.open_shards():
                self.split(shard.shard_id)

    def merge(self, shard_id: str, adjacent_id: str) -> str:
        """MergeShards: close two adjacent open shards; one child takes both ranges."""
        with self.lock:
            low, high = sorted(
                (self.shards[shard_id], self.shards[adjacent_id]), key=lambda s: s.start
            )
            assert low.open and high.open and low.end + 1 == high.start
            low.ending_sequence = high.ending_sequence = self._next_sequence()
            return self._add_shard(low.start, high.end, low.shard_id, high.shard_id).shard_id

    def delete_stream(self) -> None:
        with self.lock:
            self.exists = False

    # -- the API ----------------------------------------------------------------------------

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.list_shards_calls += 1
            token = kwargs.get("NextToken")
            if token is not None and "StreamName" in kwargs:
                raise client_error(
                    "InvalidArgumentException",
                    message="NextToken and StreamName cannot be provided together.",
                    operation="ListShards",
                )
            if token is None and kwargs.get("StreamName") != self.stream:
                raise not_found("ListShards")
            if not self.exists:
                raise not_found("ListShards")
            described = [s.describe() for s in self.shards.values()]
            start = 0 if token is None else int(token)
            size = self.page_size or len(described)
            page = described[start : start + size]
            response: dict[str, Any] = {"Shards": page}
            if start + size < len(described):
                response["NextToken"] = str(start + size)
            return response

    def put_records(self, StreamName: str, Records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self.latency_s:
            time.sleep(self.latency_s)
        self.gate.wait()
        entries = [dict(entry) for entry in Records]
        users = [entry_user_records(entry) for entry in entries]
        with self.lock:
            index = len(self.calls)
            at = self.clock()
            problem: BaseException | None
            if StreamName != self.stream or not self.exists:
                problem = not_found()
            else:
                problem = self._validate(entries)
            if problem is None and self.call_fault is not None:
                problem = self.call_fault(index, entries)
            if problem is not None:
                self.calls.append(Call(index, at, StreamName, entries, problem, users=users))
                raise problem
            results: list[dict[str, Any]] = []
            failed = 0
            for entry, inner in zip(entries, users, strict=True):
                code = self.entry_fault(index, entry) if self.entry_fault else None
                if code is not None:
                    failed += 1
                    results.append(
                        {"ErrorCode": code, "ErrorMessage": ENTRY_MESSAGES.get(code, code)}
                    )
                    continue
                landed = self._land(entry, inner, index, at)
                results.append(
                    {"ShardId": landed.shard_id, "SequenceNumber": landed.sequence_number}
                )
            self.calls.append(Call(index, at, StreamName, entries, None, results, users))
            return {"FailedRecordCount": failed, "Records": results}

    def _validate(self, entries: list[dict[str, Any]]) -> ClientError | None:
        def invalid(message: str) -> ClientError:
            return client_error("ValidationException", 400, message)

        if not 1 <= len(entries) <= MAX_ENTRIES:
            return invalid(f"{len(entries)} records: must be 1 to {MAX_ENTRIES}")
        if sum(entry_size(e) for e in entries) > MAX_CALL_BYTES:
            return invalid("the request is over 5 MiB")
        for entry in entries:
            key = str(entry["PartitionKey"])
            if not 1 <= len(key) <= 256:
                return invalid(f"partition key of {len(key)} characters")
            if entry_size(entry) > MAX_RECORD_BYTES:
                return invalid(f"a record of {entry_size(entry)} bytes")
            explicit = entry.get("ExplicitHashKey")
            if explicit is not None and not (
                str(explicit).isascii()
                and str(explicit).isdigit()
                and int(explicit) <= MAX_HASH_KEY
            ):
                return invalid(f"explicit hash key {explicit!r}")
        return None

    def _land(
        self, entry: Mapping[str, Any], users: list[UserRecord], call: int, at: float
    ) -> Landed:
        explicit = entry.get("ExplicitHashKey")
        key = str(entry["PartitionKey"])
        hash_key = int(explicit) if explicit is not None else md5_hash_key(key)
        shard = self.owner(hash_key)
        landed = Landed(
            shard.shard_id,
            str(self._next_sequence()),
            key,
            None if explicit is None else str(explicit),
            bytes(entry["Data"]),
            call,
            at,
            tuple(users),
            decode_aggregate(bytes(entry["Data"])) is not None,
        )
        self.landed.append(landed)
        self._by_sequence[landed.shard_id, landed.sequence_number] = landed
        return landed

    # -- reading back ------------------------------------------------------------------------

    def find(self, shard_id: str, sequence_number: str) -> Landed | None:
        with self.lock:
            return self._by_sequence.get((shard_id, sequence_number))

    def user_records(self) -> list[ReadBack]:
        """Every user record that landed, deaggregated, in landing order."""
        with self.lock:
            landed = list(self.landed)
        return [
            ReadBack(record, index, user)
            for record in landed
            for index, user in enumerate(record.user_records())
        ]

    def landed_data(self) -> list[bytes]:
        return [r.record.data for r in self.user_records()]

    def sends_of(self, data: bytes) -> int:
        """How many calls carried ``data`` (alone or inside an aggregate)."""
        with self.lock:
            calls = list(self.calls)
        return sum([u.data for u in inner].count(data) for call in calls for inner in call.users)


# -- ready-made faults -----------------------------------------------------------------------


def entry_user_records(entry: Mapping[str, Any]) -> list[UserRecord]:
    data = bytes(entry["Data"])
    inner = decode_aggregate(data)
    if inner is None:
        return [UserRecord(str(entry["PartitionKey"]), entry.get("ExplicitHashKey"), data)]
    return inner


def fail_keys(keys: Iterable[str], times: int, code: str | Sequence[str] = THROTTLED) -> EntryFault:
    """Fail any entry holding a record with one of ``keys`` (in an aggregate too), the first
    ``times`` times such an entry is seen per key (``times`` < 0: always). ``code`` may be a
    sequence: the n-th failure of a key gets ``code[min(n, len - 1)]``."""
    watched = set(keys)
    seen: dict[str, int] = {}
    codes = [code] if isinstance(code, str) else list(code)

    def fault(call: int, entry: Mapping[str, Any]) -> str | None:
        hit = {u.partition_key for u in entry_user_records(entry)} & watched
        if not hit:
            return None
        fail = False
        number = 0
        for key in hit:
            number = seen.get(key, 0)
            seen[key] = number + 1
            fail = fail or times < 0 or number < times
        return codes[min(number, len(codes) - 1)] if fail else None

    return fault


def random_entry_faults(
    rate: float, seed: int, codes: Sequence[str] = (THROTTLED, INTERNAL)
) -> EntryFault:
    rng = random.Random(seed)

    def fault(call: int, entry: Mapping[str, Any]) -> str | None:
        return rng.choice(codes) if rng.random() < rate else None

    return fault


def random_call_faults(
    rate: float,
    seed: int,
    errors: Sequence[Callable[[], BaseException]] = (
        throttling_error,
        server_error,
        lambda: server_error("ServiceUnavailable", 503),
        connection_error,
    ),
) -> CallFault:
    rng = random.Random(seed)

    def fault(call: int, entries: Sequence[Mapping[str, Any]]) -> BaseException | None:
        return rng.choice(errors)() if rng.random() < rate else None

    return fault


def raise_in_turn(*errors: BaseException | None) -> CallFault:
    """The first calls raise these, in order (None: that call goes through)."""
    pending = list(errors)

    def fault(call: int, entries: Sequence[Mapping[str, Any]]) -> BaseException | None:
        return pending.pop(0) if pending else None

    return fault
