"""The page-views event contract (design.md section 8).

``event_id`` (string, required), ``ts`` (epoch ms or ISO-8601, required), ``user_id``
(string), ``page`` (non-empty string, required), ``latency_ms`` (number >= 0), ``value``
(number). Anything else makes the event invalid; extra fields are allowed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import InvalidEvent, PageView, decode_page_view
from schemas.page_views import _validated

T0 = 1_795_773_600_000  # 2026-11-27T10:00:00Z
MINIMAL = {"event_id": "e1", "ts": T0, "page": "/home"}


def event(**changes: Any) -> bytes:
    """A minimal valid event with ``changes`` applied; a change to ``...`` removes the field."""
    fields = {**MINIMAL, **changes}
    return orjson.dumps({k: v for k, v in fields.items() if v is not ...})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(event(), PageView("e1", T0, "/home"), id="minimal"),
        pytest.param(
            event(user_id="u1", latency_ms=12.5, value=3),
            PageView("e1", T0, "/home", "u1", 12.5, 3),
            id="all fields",
        ),
        pytest.param(
            event(ts="2026-11-27T10:00:00Z"), PageView("e1", T0, "/home"), id="ISO ts with Z"
        ),
        pytest.param(
            event(ts="2026-11-27T12:00:00+02:00"),
            PageView("e1", T0, "/home"),
            id="ISO ts with offset",
        ),
        pytest.param(
            event(ts="2026-11-27T01:00:00.001-09:00"),
            PageView("e1", T0 + 1, "/home"),
            id="ISO ts with negative offset and ms",
        ),
        pytest.param(event(ts=float(T0)), PageView("e1", T0, "/home"), id="float ts whole"),
        pytest.param(
            event(referrer="x", tags=[1, 2], nested={"a": None}),
            PageView("e1", T0, "/home"),
            id="extra fields allowed",
        ),
        pytest.param(
            event(user_id=None, latency_ms=None, value=None),
            PageView("e1", T0, "/home"),
            id="optional fields null",
        ),
        pytest.param(
            event(latency_ms=0, value=-2.5),
            PageView("e1", T0, "/home", latency_ms=0, value=-2.5),
            id="zero latency, negative value",
        ),
        pytest.param(event(event_id=""), PageView("", T0, "/home"), id="empty event_id"),
        pytest.param(
            b'  {"event_id":"e1","ts":1795773600000,"page":"/home"}\n',
            PageView("e1", T0, "/home"),
            id="surrounding whitespace",
        ),
    ],
)
def test_valid_events(data: bytes, expected: PageView) -> None:
    assert decode_page_view(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(event(event_id=...), "event_id", id="missing event_id"),
        pytest.param(event(event_id=7), "event_id", id="event_id not a string"),
        pytest.param(event(event_id=None), "event_id", id="event_id null"),
        pytest.param(event(ts=...), "ts is required", id="missing ts"),
        pytest.param(event(ts=None), "ts", id="ts null"),
        pytest.param(event(ts=True), "boolean", id="ts as bool"),
        pytest.param(event(ts=T0 + 0.5), "whole", id="ts fractional float"),
        pytest.param(event(ts=-1), "out of range", id="ts negative"),
        pytest.param(event(ts="2026-11-27T10:00:00"), "time zone", id="ISO without zone"),
        pytest.param(event(ts="soon"), "ISO-8601", id="ts not a time"),
        pytest.param(event(page=...), "page", id="missing page"),
        pytest.param(event(page=""), "page", id="empty page"),
        pytest.param(event(page=5), "page", id="page not a string"),
        pytest.param(event(user_id=5), "user_id", id="user_id not a string"),
        pytest.param(event(latency_ms=-1), "latency_ms must be >= 0", id="negative latency"),
        pytest.param(event(latency_ms=-0.001), "latency_ms", id="slightly negative latency"),
        pytest.param(event(latency_ms="12"), "latency_ms must be a number", id="latency str"),
        pytest.param(event(latency_ms=True), "latency_ms must be a number", id="latency bool"),
        pytest.param(event(value="12"), "value must be a number", id="value as string"),
        pytest.param(event(value=False), "value must be a number", id="value as bool"),
        pytest.param(event(value=[1]), "value must be a number", id="value as list"),
        pytest.param(b"[1, 2, 3]", "JSON object", id="array"),
        pytest.param(b'"just a string"', "JSON object", id="string"),
        pytest.param(b"42", "JSON object", id="number"),
        pytest.param(b"null", "JSON object", id="null"),
        pytest.param(b"{not json", "malformed JSON", id="malformed JSON"),
        pytest.param(b"", "malformed JSON", id="empty"),
        pytest.param(b'{"event_id": "e1"', "malformed JSON", id="truncated"),
        pytest.param(b"\xff\xfe not utf-8", "malformed JSON", id="not UTF-8"),
        pytest.param(b'{"event_id":"e1","ts":NaN,"page":"/"}', "malformed JSON", id="NaN"),
    ],
)
def test_invalid_events(data: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        decode_page_view(data)


def test_only_invalid_event_escapes() -> None:
    """Every rejection is an InvalidEvent (so the engine dead-letters it, never crashes),
    here for a grab bag of hostile inputs."""
    for data in [b"\x00", b"{}", b'{"ts": {}}', b"[]" * 3, b'{"event_id": "e", "ts": []}']:
        with pytest.raises(InvalidEvent):
            decode_page_view(data)


_json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["2026-11-27T10:00:00Z", "2026-11-27T10:00:00", "2026-11-27T10:00:00+02:00"]),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=2),
)
_events = st.dictionaries(
    st.sampled_from(["event_id", "ts", "page", "user_id", "latency_ms", "value", "extra"]),
    _json_values,
)


@given(_events)
@settings(max_examples=400)
def test_the_fast_path_accepts_exactly_what_the_full_rules_accept(event: dict[str, object]) -> None:
    """decode_page_view checks the common case in one expression; every answer must be the
    one the rule-by-rule validation gives."""
    data = orjson.dumps(event)
    try:
        expected: PageView | str = _validated(orjson.loads(data))
    except InvalidEvent:
        expected = "invalid"
    try:
        got: PageView | str = decode_page_view(data)
    except InvalidEvent:
        got = "invalid"
    assert got == expected


_nearly_valid = st.fixed_dictionaries(
    {
        "event_id": st.one_of(st.text(max_size=5), st.integers(0, 3)),
        "ts": st.one_of(
            st.integers(-5, 10_000_000_000_005), st.booleans(), st.floats(0, 1e13), _json_values
        ),
        "page": st.one_of(st.text(max_size=5), st.none()),
    },
    optional={
        "user_id": st.one_of(st.text(max_size=5), st.none(), st.integers(0, 3)),
        "latency_ms": st.one_of(
            st.floats(-10, 1e6),
            st.integers(-3, 10**6),
            st.none(),
            st.booleans(),
            st.text(max_size=3),
        ),
        "value": st.one_of(
            st.floats(-1e6, 1e6),
            st.integers(-(10**6), 10**6),
            st.none(),
            st.booleans(),
            st.text(max_size=3),
        ),
    },
)


@given(_nearly_valid)
@settings(max_examples=600)
def test_the_fast_path_agrees_on_nearly_valid_events(event: dict[str, object]) -> None:
    test_the_fast_path_accepts_exactly_what_the_full_rules_accept.hypothesis.inner_test(event)  # type: ignore[attr-defined]
