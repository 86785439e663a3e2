"""Reading events to produce: partition keys, JSON-lines files, stdin, synthetic events."""

from __future__ import annotations

import hashlib
import io
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import InvalidEvent
from schemas.page_views import decode_page_view
from shardflow.input import file_records, open_input, partition_key_for, synthetic_records
from streams.producer_api import check_record


def md5(line: bytes) -> str:
    return hashlib.md5(line).hexdigest()


# --- partition_key_for ---------------------------------------------------------------------


def test_string_field_is_the_key() -> None:
    assert partition_key_for(b'{"event_id": "e-1", "page": "/home"}', "event_id") == "e-1"
    assert partition_key_for(b'{"event_id": "e-1", "page": "/home"}', "page") == "/home"


@pytest.mark.parametrize(("value", "key"), [("42", "42"), ("-7", "-7"), ("0", "0")])
def test_integer_field_is_the_key(value: str, key: str) -> None:
    assert partition_key_for(b'{"user": ' + value.encode() + b"}", "user") == key


@pytest.mark.parametrize(
    "line",
    [
        b"{not json",
        b"",
        b"\xff\xfe garbage",
        b'{"page": "/home"}',  # field missing
        b'{"event_id": ""}',  # empty
        b'{"event_id": null}',
        b'{"event_id": true}',  # booleans are not keys
        b'{"event_id": {"nested": 1}}',
        b'{"event_id": ["a"]}',
        b'["event_id", "a"]',  # not an object
        b'"event_id"',
        b"12345",
    ],
)
def test_lines_without_a_usable_field_hash_to_a_stable_md5(line: bytes) -> None:
    key = partition_key_for(line, "event_id")
    assert key == md5(line)
    assert partition_key_for(line, "event_id") == key
    assert len(key) == 32


def test_fallback_keys_differ_between_lines() -> None:
    assert partition_key_for(b"{bad 1", "event_id") != partition_key_for(b"{bad 2", "event_id")


def test_long_field_values_are_cut_to_a_valid_partition_key() -> None:
    line = orjson.dumps({"event_id": "x" * 1000})
    key = partition_key_for(line, "event_id")
    assert key == "x" * 256
    assert check_record(line, key) is None


def test_non_ascii_field_values_are_kept() -> None:
    assert partition_key_for(orjson.dumps({"page": "/café"}), "page") == "/café"


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["event_id", "page", "other"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(min_value=-(2**63), max_value=2**63 - 1),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=400),
            ),
        ).map(orjson.dumps),
    )
)
def test_property_every_line_gets_a_valid_stable_key(line: bytes) -> None:
    key = partition_key_for(line, "event_id")
    assert key == partition_key_for(line, "event_id")
    assert 1 <= len(key) <= 256
    assert check_record(line, key) is None


# --- file_records --------------------------------------------------------------------------


def test_file_records_skip_blank_lines_strip_line_ends_and_number_from_one() -> None:
    data = (
        b'{"event_id": "a"}\r\n'
        b"\r\n"
        b"   \t \n"
        b'{"event_id": "b"}\n'
        b"\n"
        b'{"event_id": "c"}'  # no final newline
    )
    records = list(file_records(io.BytesIO(data), "event_id"))
    assert [r.ref for r in records] == [1, 4, 6]
    assert [r.data for r in records] == [
        b'{"event_id": "a"}',
        b'{"event_id": "b"}',
        b'{"event_id": "c"}',
    ]
    assert [r.partition_key for r in records] == ["a", "b", "c"]


def test_file_records_keep_malformed_lines_with_a_hashed_key() -> None:
    records = list(file_records(io.BytesIO(b"{oops\r\n" + b'{"page": "/x"}\n'), "event_id"))
    assert [r.data for r in records] == [b"{oops", b'{"page": "/x"}']
    assert [r.partition_key for r in records] == [md5(b"{oops"), md5(b'{"page": "/x"}')]
    assert [r.ref for r in records] == [1, 2]


def test_file_records_use_the_chosen_field() -> None:
    records = list(file_records(io.BytesIO(b'{"event_id": "e", "page": "/p"}\n'), "page"))
    assert records[0].partition_key == "/p"


def test_file_records_of_an_empty_or_blank_file() -> None:
    assert list(file_records(io.BytesIO(b""), "event_id")) == []
    assert list(file_records(io.BytesIO(b"\n\r\n  \n"), "event_id")) == []


# --- open_input ----------------------------------------------------------------------------


def test_open_input_reads_a_file_as_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event_id": "a"}\n')
    with open_input(str(path)) as stream:
        assert stream.read() == b'{"event_id": "a"}\n'


def test_open_input_dash_is_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"line\n")))
    with open_input("-") as stream:
        assert stream.read() == b"line\n"


def test_open_input_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), open_input(str(tmp_path / "nope.jsonl")):
        pass


# --- synthetic_records ---------------------------------------------------------------------


def test_synthetic_records_are_numbered_keyed_and_valid_json() -> None:
    records = list(synthetic_records(20, seed=3, field="event_id"))
    assert [r.ref for r in records] == list(range(1, 21))
    events = [orjson.loads(r.data) for r in records]
    assert [r.partition_key for r in records] == [e["event_id"] for e in events]
    assert len({r.partition_key for r in records}) == 20
    assert all(check_record(r.data, r.partition_key) is None for r in records)


def test_synthetic_records_zero() -> None:
    assert list(synthetic_records(0, seed=1, field="event_id")) == []


def test_synthetic_records_without_a_count_run_until_stopped() -> None:
    stop = threading.Event()
    records = synthetic_records(None, seed=5, field="event_id", stop=stop)
    taken = [next(records) for _ in range(1_000)]
    assert [r.ref for r in taken] == list(range(1, 1_001))
    stop.set()
    assert list(records) == []


def test_synthetic_records_stop_before_the_count() -> None:
    stop = threading.Event()
    records = synthetic_records(10, seed=5, field="event_id", stop=stop)
    first = next(records)
    stop.set()
    assert first.ref == 1 and list(records) == []


def is_page_view(data: bytes) -> bool:
    try:
        decode_page_view(data)
    except InvalidEvent:
        return False
    return True


def test_synthetic_records_late_fraction() -> None:
    before = time.time_ns() // 1_000_000
    late = [orjson.loads(r.data) for r in synthetic_records(50, 2, "event_id", late_fraction=1)]
    assert all(event["ts"] <= before - 120_000 + 1_000 for event in late)


def test_synthetic_records_invalid_fraction() -> None:
    records = list(synthetic_records(200, seed=2, field="event_id", invalid_fraction=0.5))
    invalid = [r for r in records if not is_page_view(r.data)]
    assert 50 < len(invalid) < 150
    assert all(
        check_record(r.data, r.partition_key) is None for r in records
    )  # sent anyway: dead-lettered later
    assert all(is_page_view(r.data) for r in synthetic_records(200, 2, "event_id"))
