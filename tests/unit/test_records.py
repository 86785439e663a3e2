"""Positions within a shard: (sequence number, sub-sequence number).

Kinesis sequence numbers are decimal strings of up to 56 digits, far beyond 64-bit
integers; the sub-sequence number orders user records inside a KPL aggregate. Storage
compares positions as text, so the storage key must sort exactly like the positions.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.windowing.records import Position, Record

# A real 56-digit sequence number, as Kinesis returns it.
REAL = "49590338271490256608559692538361571095921575989136588898"

positions = st.builds(
    Position,
    st.integers(min_value=0, max_value=10**56 - 1),
    st.integers(min_value=0, max_value=2**31 - 1),
)


def test_a_56_digit_sequence_number_parses_exactly() -> None:
    position = Position.parse(REAL)
    assert len(REAL) == 56
    assert position.sequence_number == REAL
    assert position.sub == 0
    assert Position.from_storage_key(position.storage_key()) == position


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        (Position(1), Position(2)),
        (Position(5, 0), Position(5, 1)),  # user records of one KPL aggregate
        (Position(5, 99), Position(6, 0)),  # any sub-record precedes the next record
        (Position(9), Position(10)),  # numeric, not textual, order
        (Position.parse(REAL), Position.parse(str(int(REAL) + 1))),
        (Position(10**55), Position(10**55 + 1)),
    ],
)
def test_positions_order_by_sequence_then_sub(smaller: Position, larger: Position) -> None:
    assert smaller < larger
    assert smaller.storage_key() < larger.storage_key()


def test_storage_key_is_fixed_width() -> None:
    assert len(Position(0).storage_key()) == len(Position.parse(REAL, 7).storage_key())


def test_a_storage_key_without_sub_means_sub_zero() -> None:
    assert Position.from_storage_key("42") == Position(42, 0)


@given(positions)
def test_storage_key_round_trips(position: Position) -> None:
    assert Position.from_storage_key(position.storage_key()) == position
    assert Position.parse(position.sequence_number, position.sub) == position


@given(positions, positions)
def test_storage_key_order_is_position_order(a: Position, b: Position) -> None:
    assert (a < b) == (a.storage_key() < b.storage_key())
    assert (a == b) == (a.storage_key() == b.storage_key())


def test_records_are_values() -> None:
    record = Record("shardId-000000000000", Position(1), "pk", b"{}", arrival_ms=5)
    assert record == Record("shardId-000000000000", Position(1), "pk", b"{}", arrival_ms=5)
