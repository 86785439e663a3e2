"""The redrive envelope: only the pipeline that rejected an event sees it again, every other
pipeline on the stream skips it, and a broken envelope is an invalid dead letter, never a
stopped shard."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.engine import REASON_INVALID, ShardEngine, ShardProgress
from processors.windowing.records import Position, Record, make_record
from processors.windowing.redrive_envelope import (
    MAGIC,
    MALFORMED,
    MAX_HEADER_BYTES,
    MalformedEnvelope,
    route,
    unwrap,
    wrap,
)
from processors.windowing.rows import StoredRow
from streams.kpl import AggregateBuilder, UserRecord
from streams.shard_reader import ShardReader
from tests.unit.fake_kinesis import FakeKinesis

T0 = 1_795_000_000_000
OTHER = replace(PAGE_VIEWS, name="other-views")
names = st.text(min_size=1).filter(lambda name: "#" not in name)


def event(seq: int, page: str = "/a") -> bytes:
    return orjson.dumps({"event_id": f"e{seq}", "ts": T0 + seq, "page": page})


def record(seq: int, data: bytes, only_for: str | None = None) -> Record:
    return make_record("s0", seq, 0, "pk", data, T0, only_for)


def no_rows(keys: object) -> list[StoredRow]:
    return []


# -- the format ----------------------------------------------------------------------


@given(names, st.text(), st.binary())
def test_unwrap_gives_back_what_was_wrapped(pipeline: str, letter: str, data: bytes) -> None:
    assert unwrap(wrap(pipeline, letter, data)) == (pipeline, letter, data)
    assert route(wrap(pipeline, letter, data)) == (data, pipeline, letter)


@given(st.binary().filter(lambda data: not data.startswith(MAGIC)))
def test_anything_else_is_no_envelope(data: bytes) -> None:
    assert unwrap(data) is None
    assert route(data) == (data, None, None)


@given(st.dictionaries(st.text(), st.integers() | st.text()), st.sampled_from(["", " ", "\n"]))
def test_no_json_event_looks_like_an_envelope(event: dict[str, object], space: str) -> None:
    assert unwrap((space + json.dumps(event)).encode()) is None


@pytest.mark.parametrize(
    "data",
    [
        MAGIC,
        MAGIC + b'{"pipeline": "page-views", "dead_letter_id": "x"}',  # no end of header
        MAGIC + b"not json\n{}",
        MAGIC + b"[1, 2]\n{}",
        MAGIC + b'{"pipeline": "", "dead_letter_id": "x"}\n{}',
        MAGIC + b'{"pipeline": "page-views"}\n{}',
        MAGIC + b'{"pipeline": "p", "dead_letter_id": 7}\n{}',
        MAGIC + b" " * (MAX_HEADER_BYTES + 1) + b"\n{}",
    ],
)
def test_a_broken_envelope_is_a_value_error_and_routes_as_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEnvelope) as caught:
        unwrap(data)
    assert isinstance(caught.value, ValueError)
    assert route(data) == (data, MALFORMED, None)


def test_a_kpl_aggregate_is_no_envelope() -> None:
    builder = AggregateBuilder(1 << 20)
    assert builder.add(UserRecord("k", None, b"x"))
    assert unwrap(builder.build()) is None


# -- the engine ------------------------------------------------------------------------


def test_the_engine_aggregates_its_own_redriven_records_and_skips_others() -> None:
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    engine.process(
        [
            record(1, event(1)),
            record(2, event(2), only_for="page-views"),
            record(3, event(3), only_for="other-views"),
            record(4, b"{not json", only_for="other-views"),
        ],
        no_rows,
    )
    plan = engine.plan_flush()
    assert plan.dead_letters == []
    assert engine.position == Position(4)  # a skipped record is done like any other
    assert plan.progress is not None and plan.progress.checkpoint == Position(4)
    (row,) = engine.snapshot().values()
    assert row.states[0] == 2  # views: records 1 and 2
    assert row.high_water == Position(2)

    other = ShardEngine(OTHER, ShardProgress("s0"))
    other.process([record(2, event(2), only_for="page-views"), record(3, event(3))], no_rows)
    (row,) = other.snapshot().values()
    assert row.states[0] == 1
    assert other.position == Position(3)


def test_a_broken_envelope_is_an_invalid_dead_letter_in_every_pipeline() -> None:
    broken = MAGIC + b"oops\n" + event(1)
    for pipeline in (PAGE_VIEWS, OTHER):
        engine = ShardEngine(pipeline, ShardProgress("s0"))
        engine.process([record(1, broken, MALFORMED), record(2, event(2))], no_rows)
        plan = engine.plan_flush()
        assert [letter.reason for letter in plan.dead_letters] == [REASON_INVALID]
        assert "redrive envelope" in plan.dead_letters[0].error
        assert plan.dead_letters[0].record.data == broken
        assert engine.position == Position(2)


def test_a_broken_envelope_is_not_dead_lettered_again_after_a_restart() -> None:
    broken = record(1, MAGIC + b"oops\n{}", MALFORMED)
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0"))
    engine.process([broken], no_rows)
    plan = engine.plan_flush()
    engine.confirm_flush(plan)
    assert plan.progress is not None
    # A replay from before the checkpoint, with dead letters recorded as sent through it.
    restarted = ShardEngine(
        PAGE_VIEWS,
        replace(plan.progress, checkpoint=None, dead_letters_through=Position(1)),
    )
    restarted.process([broken], no_rows)
    assert restarted.plan_flush().dead_letters == []


def test_rows_to_load_ignores_records_for_other_pipelines() -> None:
    engine = ShardEngine(PAGE_VIEWS, ShardProgress("s0", horizon=T0 + 600_000))
    wanted = engine.rows_to_load(
        [
            record(1, event(1, page="/mine"), only_for="page-views"),
            record(2, event(2, page="/theirs"), only_for="other-views"),
            record(3, event(3, page="/broken"), only_for=MALFORMED),
        ]
    )
    assert [key for key, _ in wanted] == ["/mine"]


# -- the shard reader -----------------------------------------------------------------


def test_the_reader_unwraps_plain_and_aggregated_envelopes() -> None:
    builder = AggregateBuilder(1 << 20)
    assert builder.add(UserRecord("u0", None, event(2)))
    assert builder.add(UserRecord("u1", None, wrap("other-views", "id-3", event(3))))
    kinesis = FakeKinesis()
    broken = MAGIC + b"oops"
    kinesis.put("s0", wrap("page-views", "id-1", event(1)), builder.build(), broken)
    records = ShardReader(kinesis, "stream", "s0", None).read().records  # type: ignore[arg-type]
    assert [(r.position, r.data, r.only_for) for r in records] == [
        (Position(1), event(1), "page-views"),
        (Position(2, 0), event(2), None),
        (Position(2, 1), event(3), "other-views"),
        (Position(3), broken, MALFORMED),
    ]
    assert records[2].partition_key == "u1"


def test_records_default_to_every_pipeline() -> None:
    assert Record("s0", Position(1), "pk", b"{}").only_for is None
    assert make_record("s0", 1, 0, "pk", b"{}").only_for is None
