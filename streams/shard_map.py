"""Which shard a record goes to: the MD5 of its partition key (or its explicit hash key)
as a 128-bit integer, within the open shards' hash key ranges.

Kinesis places a record by ``int(md5(partition_key))``, or by the explicit hash key when
one is given, into the open shard whose ``[StartingHashKey, EndingHashKey]`` holds it.
The producer predicts that shard to rate-limit per shard and to aggregate per shard.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_HASH_KEY = 2**128 - 1


def hash_key_of(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """The 128-bit hash key Kinesis places a record by."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def check_explicit_hash_key(explicit_hash_key: str) -> str | None:
    """Why ``explicit_hash_key`` is not a valid explicit hash key, or None."""
    if not explicit_hash_key.isdigit() or not explicit_hash_key.isascii():
        return f"explicit hash key must be a decimal integer, got {explicit_hash_key[:50]!r}"
    if int(explicit_hash_key) > MAX_HASH_KEY:
        return "explicit hash key must be at most 2**128 - 1"
    return None


def list_all_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every shard of ``stream`` (ListShards, all pages)."""
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        response = kinesis.list_shards(**kwargs)
        shards.extend(response["Shards"])
        token = response.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


@dataclass(frozen=True)
class ShardRange:
    shard_id: str
    start: int
    end: int  # inclusive, as Kinesis reports it


class ShardMap:
    """The open shards of a stream by hash key range."""

    def __init__(self, ranges: Iterable[ShardRange]) -> None:
        self._ranges = sorted(ranges, key=lambda r: r.start)
        if not self._ranges:
            raise ValueError("a stream has at least one open shard")
        self._starts = [r.start for r in self._ranges]

    @classmethod
    def from_shards(cls, shards: Iterable[Mapping[str, Any]]) -> ShardMap:
        """From ListShards entries; closed shards (with an ending sequence number) are
        left out: Kinesis writes only to open shards."""
        return cls(
            ShardRange(
                shard["ShardId"],
                int(shard["HashKeyRange"]["StartingHashKey"]),
                int(shard["HashKeyRange"]["EndingHashKey"]),
            )
            for shard in shards
            if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})
        )

    @property
    def shard_ids(self) -> list[str]:
        return [r.shard_id for r in self._ranges]

    def shard_for(self, hash_key: int) -> str:
        """The open shard whose range holds ``hash_key``."""
        index = bisect.bisect_right(self._starts, hash_key) - 1
        shard = self._ranges[max(index, 0)]
        return shard.shard_id

    def range_of(self, shard_id: str) -> ShardRange | None:
        return next((r for r in self._ranges if r.shard_id == shard_id), None)
