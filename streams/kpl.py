"""The KPL aggregation format: many user records in one Kinesis record. Pure (no AWS SDK,
no clock, no protobuf dependency: the few messages involved are encoded by hand).

An aggregated record's data is::

    MAGIC (F3 89 9A C2) | protobuf AggregatedRecord | MD5 of the protobuf bytes (16)

with the proto2 messages (awslabs/amazon-kinesis-producer ``aggregation-format.md``)::

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;   // not used by KPL/KCL; skipped
    }

A consumer numbers the user records of an aggregate by their index in ``records``: that
is the sub-sequence number of :class:`processors.windowing.records.Position`.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16
_FIXED_BYTES = len(MAGIC) + DIGEST_BYTES

# Field keys (field number << 3 | wire type): 0 is a varint, 2 is length-delimited.
_WIRE_VARINT = 0
_WIRE_FIXED64 = 1
_WIRE_LENGTH = 2
_WIRE_FIXED32 = 5
_KEY_PK_TABLE = b"\x0a"  # AggregatedRecord.partition_key_table = 1
_KEY_EHK_TABLE = b"\x12"  # AggregatedRecord.explicit_hash_key_table = 2
_KEY_RECORD = b"\x1a"  # AggregatedRecord.records = 3
_KEY_PK_INDEX = 0x08  # Record.partition_key_index = 1 (varint)
_KEY_EHK_INDEX = 0x10  # Record.explicit_hash_key_index = 2 (varint)
_KEY_DATA = 0x1A  # Record.data = 3 (bytes)

_MAX_VARINT_BYTES = 10
_UINT64_LIMIT = 1 << 64


class UserRecord(NamedTuple):
    """One record as the producer's user sees it, inside an aggregate."""

    partition_key: str
    explicit_hash_key: str | None
    data: bytes


class MalformedAggregate(ValueError):
    """The data carries the KPL magic and a matching MD5, but its protobuf is invalid.
    Messages give byte offsets into the whole record data (magic included)."""


def _varint_size(value: int) -> int:
    """Bytes of ``value`` (>= 0) as a protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7)


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _field_size(length: int) -> int:
    """Bytes of a length-delimited field with a one-byte key and ``length`` bytes of payload."""
    return 1 + _varint_size(length) + length


class AggregateBuilder:
    """Packs user records into one aggregated Kinesis record of at most ``max_bytes``.

    ``size`` is exact and kept up to date as records are added, without encoding anything:
    it is what the aggregate counts against Kinesis's per-record limit, that is the
    length of :meth:`build`'s result plus the UTF-8 length of :attr:`partition_key` (the
    outer record's partition key). It is 0 while the builder is empty. Partition keys and
    explicit hash keys are stored once each in their tables, as the KPL does.

    The builder knows nothing of shards: the aggregate is routed by its first record's
    keys, so the caller must only add records bound for the same shard (the producer
    groups them by shard first). Records of other shards would be read from the wrong
    shard, and a KCL consumer drops them. It does not check Kinesis's key rules either
    (partition keys of 1 to 256 characters, explicit hash keys below 2**128): the
    producer does.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        self.max_bytes = max_bytes
        self._pk_index: dict[str, int] = {}
        self._pk_table: list[bytes] = []
        self._ehk_index: dict[str, int] = {}
        self._ehk_table: list[bytes] = []
        self._records: list[tuple[int, int | None, bytes]] = []
        self._body = 0  # bytes of the protobuf message
        self._first: UserRecord | None = None

    @property
    def count(self) -> int:
        return len(self._records)

    @property
    def size(self) -> int:
        if not self._records:
            return 0
        return _FIXED_BYTES + self._body + len(self._pk_table[0])

    @property
    def partition_key(self) -> str | None:
        """The outer record's partition key: the first record's (None while empty)."""
        return None if self._first is None else self._first.partition_key

    @property
    def explicit_hash_key(self) -> str | None:
        """The outer record's explicit hash key: the first record's, if it has one."""
        return None if self._first is None else self._first.explicit_hash_key

    def add(self, record: UserRecord) -> bool:
        """Add ``record`` if the aggregate then still fits in ``max_bytes``; otherwise
        leave the builder as it was and return False.

        On an empty builder, False means the record does not fit even alone in an
        aggregate: the caller sends it as a plain record (if it fits as one) or rejects it.
        """
        partition_key, explicit_hash_key, data = record
        growth = 0
        pk_index = self._pk_index.get(partition_key)
        pk_bytes = b""
        if pk_index is None:
            pk_bytes = partition_key.encode("utf-8")
            pk_index = len(self._pk_table)
            growth += _field_size(len(pk_bytes))
        ehk_index: int | None = None
        ehk_bytes = b""
        inner = 1 + _varint_size(pk_index) + _field_size(len(data))
        if explicit_hash_key is not None:
            ehk_index = self._ehk_index.get(explicit_hash_key)
            if ehk_index is None:
                ehk_bytes = explicit_hash_key.encode("utf-8")
                ehk_index = len(self._ehk_table)
                growth += _field_size(len(ehk_bytes))
            inner += 1 + _varint_size(ehk_index)
        growth += _field_size(inner)
        outer_key = len(self._pk_table[0]) if self._pk_table else len(pk_bytes)
        if _FIXED_BYTES + self._body + growth + outer_key > self.max_bytes:
            return False
        if pk_index == len(self._pk_table):
            self._pk_index[partition_key] = pk_index
            self._pk_table.append(pk_bytes)
        if explicit_hash_key is not None and ehk_index == len(self._ehk_table):
            self._ehk_index[explicit_hash_key] = ehk_index
            self._ehk_table.append(ehk_bytes)
        if self._first is None:
            self._first = record
        self._records.append((pk_index, ehk_index, bytes(data)))
        self._body += growth
        return True

    def build(self) -> bytes:
        """The aggregated record's data (magic, protobuf, MD5). Fields are written in
        field-number order, as protobuf serializers do."""
        if not self._records:
            raise ValueError("an aggregate needs at least one record")
        out = bytearray(MAGIC)
        for key, table in ((_KEY_PK_TABLE, self._pk_table), (_KEY_EHK_TABLE, self._ehk_table)):
            for entry in table:
                out += key
                _put_varint(out, len(entry))
                out += entry
        for pk_index, ehk_index, data in self._records:
            inner = 1 + _varint_size(pk_index) + _field_size(len(data))
            if ehk_index is not None:
                inner += 1 + _varint_size(ehk_index)
            out += _KEY_RECORD
            _put_varint(out, inner)
            out.append(_KEY_PK_INDEX)
            _put_varint(out, pk_index)
            if ehk_index is not None:
                out.append(_KEY_EHK_INDEX)
                _put_varint(out, ehk_index)
            out.append(_KEY_DATA)
            _put_varint(out, len(data))
            out += data
        out += hashlib.md5(memoryview(out)[len(MAGIC) :], usedforsecurity=False).digest()
        return bytes(out)


def is_aggregate(data: bytes) -> bool:
    """Whether ``data`` starts like an aggregate (the magic, room for an MD5). Cheap; the
    MD5 is checked by :func:`decode_aggregate`."""
    return len(data) >= _FIXED_BYTES and data[:4] == MAGIC


def decode_aggregate(data: bytes) -> list[UserRecord] | None:
    """The user records of an aggregated record, in order (index = sub-sequence number).

    None when ``data`` is not an aggregate: no magic, too short, or an MD5 that does not
    match (the KCL's rule: such data is a plain record). Raises :class:`MalformedAggregate`
    when magic and MD5 match but the protobuf is invalid, or holds no user record (a
    producer never makes one, and reading it as nothing would lose the Kinesis record).
    Work and memory are linear in ``len(data)`` whatever the input.
    """
    if not is_aggregate(data):
        return None
    end = len(data) - DIGEST_BYTES
    view = memoryview(data)
    if hashlib.md5(view[len(MAGIC) : end], usedforsecurity=False).digest() != data[end:]:
        return None
    return _parse(view, len(MAGIC), end)


def _read_varint(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise MalformedAggregate(f"truncated varint ({what}) at byte {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if pos - start >= _MAX_VARINT_BYTES:
            raise MalformedAggregate(f"varint ({what}) longer than 10 bytes at byte {start}")
    if result >= _UINT64_LIMIT:
        raise MalformedAggregate(f"varint ({what}) exceeds 64 bits at byte {start}")
    return result, pos


def _read_length(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    """A length-delimited field's payload bounds: (start, stop)."""
    length, pos = _read_varint(buf, pos, end, f"length of {what}")
    if length > end - pos:
        raise MalformedAggregate(
            f"{what} at byte {pos} claims {length} bytes, only {end - pos} remain"
        )
    return pos, pos + length


def _skip(buf: memoryview, pos: int, end: int, wire: int, what: str) -> int:
    """Skip an unknown field's value (protobuf's rule for fields a reader does not know)."""
    if wire == _WIRE_VARINT:
        return _read_varint(buf, pos, end, what)[1]
    if wire == _WIRE_LENGTH:
        return _read_length(buf, pos, end, what)[1]
    size = {_WIRE_FIXED64: 8, _WIRE_FIXED32: 4}.get(wire)
    if size is None:
        raise MalformedAggregate(f"{what} at byte {pos} has unsupported wire type {wire}")
    if size > end - pos:
        raise MalformedAggregate(f"{what} at byte {pos} is truncated")
    return pos + size


def _read_key(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """(field number, wire type, next position)."""
    key, pos = _read_varint(buf, pos, end, f"field key in {what}")
    field, wire = key >> 3, key & 7
    if field == 0:
        raise MalformedAggregate(f"field number 0 in {what} before byte {pos}")
    return field, wire, pos


def _text(buf: memoryview, start: int, stop: int, what: str) -> str:
    try:
        return str(buf[start:stop], "utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedAggregate(f"{what} at byte {start} is not UTF-8: {exc.reason}") from None


def _expect_wire(wire: int, expected: int, what: str, pos: int) -> None:
    if wire != expected:
        raise MalformedAggregate(f"{what} before byte {pos} has wire type {wire}, not {expected}")


def _parse(buf: memoryview, pos: int, end: int) -> list[UserRecord]:
    partition_keys: list[str] = []
    hash_keys: list[str] = []
    spans: list[tuple[int, int]] = []
    while pos < end:
        field, wire, pos = _read_key(buf, pos, end, "AggregatedRecord")
        if field == 1:
            _expect_wire(wire, _WIRE_LENGTH, "partition_key_table entry", pos)
            start, pos = _read_length(buf, pos, end, "partition_key_table entry")
            partition_keys.append(_text(buf, start, pos, "partition key"))
        elif field == 2:
            _expect_wire(wire, _WIRE_LENGTH, "explicit_hash_key_table entry", pos)
            start, pos = _read_length(buf, pos, end, "explicit_hash_key_table entry")
            hash_keys.append(_text(buf, start, pos, "explicit hash key"))
        elif field == 3:
            _expect_wire(wire, _WIRE_LENGTH, "record", pos)
            start, pos = _read_length(buf, pos, end, "record")
            spans.append((start, pos))
        else:
            pos = _skip(buf, pos, end, wire, f"AggregatedRecord field {field}")
    if not spans:
        raise MalformedAggregate("the aggregate holds no user record")
    return [
        _parse_record(buf, start, stop, index, partition_keys, hash_keys)
        for index, (start, stop) in enumerate(spans)
    ]


def _parse_record(
    buf: memoryview,
    pos: int,
    end: int,
    index: int,
    partition_keys: list[str],
    hash_keys: list[str],
) -> UserRecord:
    what = f"record {index}"
    pk_index: int | None = None
    ehk_index: int | None = None
    data: tuple[int, int] | None = None
    while pos < end:
        field, wire, pos = _read_key(buf, pos, end, what)
        if field == 1:
            _expect_wire(wire, _WIRE_VARINT, f"{what} partition_key_index", pos)
            pk_index, pos = _read_varint(buf, pos, end, f"{what} partition_key_index")
        elif field == 2:
            _expect_wire(wire, _WIRE_VARINT, f"{what} explicit_hash_key_index", pos)
            ehk_index, pos = _read_varint(buf, pos, end, f"{what} explicit_hash_key_index")
        elif field == 3:
            _expect_wire(wire, _WIRE_LENGTH, f"{what} data", pos)
            data = _read_length(buf, pos, end, f"{what} data")
            pos = data[1]
        else:  # tags (4) and unknown fields
            pos = _skip(buf, pos, end, wire, f"{what} field {field}")
    if pk_index is None:
        raise MalformedAggregate(f"{what} has no partition_key_index")
    if data is None:
        raise MalformedAggregate(f"{what} has no data")
    if pk_index >= len(partition_keys):
        raise MalformedAggregate(
            f"{what}: partition_key_index {pk_index} is outside the table "
            f"of {len(partition_keys)} keys"
        )
    hash_key: str | None = None
    if ehk_index is not None:
        if ehk_index >= len(hash_keys):
            raise MalformedAggregate(
                f"{what}: explicit_hash_key_index {ehk_index} is outside the table "
                f"of {len(hash_keys)} keys"
            )
        hash_key = hash_keys[ehk_index]
    return UserRecord(partition_keys[pk_index], hash_key, bytes(buf[data[0] : data[1]]))
