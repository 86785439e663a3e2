"""Alert rules, alert ids and the alert message (processors/alerts.py): pure, no AWS."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.alerts import (
    MAX_SUBJECT_CHARS,
    OPERATORS,
    SEVERITIES,
    Alert,
    AlertRule,
    alert_attributes,
    alert_body,
    alert_id,
    alert_subject,
    alerts_for,
    check_rules,
    json_safe,
    rule,
)
from processors.pipelines.device_sessions import DEVICE_SESSIONS
from processors.pipelines.page_views import PAGE_VIEWS
from processors.windowing.aggregators import Aggregator, Count, First, Max
from processors.windowing.top_k import TopK

START = 1_795_773_600_000  # 2026-11-27T10:00:00Z
END = START + 60_000
FORM = "expected <aggregate> <operator> <number>, e.g. 'views > 1000'"
OPS = ">, >=, <, <=, ==, !="


def page_view_aggregates() -> list[tuple[str, Any]]:
    return [(spec.name, spec.aggregator) for spec in PAGE_VIEWS.aggregates]


def device_aggregates() -> list[tuple[str, Any]]:
    return [(spec.name, spec.aggregator) for spec in DEVICE_SESSIONS.aggregates]


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "aggregate", "operator", "threshold", "canonical"),
    [
        ("views > 1000", "views", ">", 1000, "views > 1000"),
        ("views>1000", "views", ">", 1000, "views > 1000"),
        ("  latency_p99 >=   500 ", "latency_p99", ">=", 500, "latency_p99 >= 500"),
        ("temperature_mean < -5", "temperature_mean", "<", -5, "temperature_mean < -5"),
        ("temperature_mean<-5.5", "temperature_mean", "<", -5.5, "temperature_mean < -5.5"),
        ("revenue <= 1e3", "revenue", "<=", 1000.0, "revenue <= 1000"),
        ("revenue <= 2.5E-3", "revenue", "<=", 0.0025, "revenue <= 0.0025"),
        ("views == +7", "views", "==", 7, "views == 7"),
        ("views != .5", "views", "!=", 0.5, "views != 0.5"),
        ("views > 10.0", "views", ">", 10.0, "views > 10"),
        ("_x1 > 0", "_x1", ">", 0, "_x1 > 0"),
    ],
)
def test_good_rules_parse(
    text: str, aggregate: str, operator: str, threshold: float, canonical: str
) -> None:
    parsed = rule(text)
    assert (parsed.aggregate, parsed.operator, parsed.threshold) == (
        aggregate,
        operator,
        threshold,
    )
    assert parsed.severity == "warning"
    assert parsed.text == canonical
    assert rule(parsed.text) == parsed


def test_severity_is_kept() -> None:
    assert rule("views > 1", severity="critical").severity == "critical"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", f"empty alert rule: {FORM}"),
        ("   ", f"empty alert rule: {FORM}"),
        ("views 1000", f"alert rule 'views 1000' has no operator: {FORM}, with one of {OPS}"),
        ("views => 1000", f"alert rule 'views => 1000': unknown operator '=>': use one of {OPS}"),
        ("views = 1000", f"alert rule 'views = 1000': unknown operator '=': use one of {OPS}"),
        ("views >> 1", f"alert rule 'views >> 1': unknown operator '>>': use one of {OPS}"),
        ("views <> 1", f"alert rule 'views <> 1': unknown operator '<>': use one of {OPS}"),
        ("views >", f"alert rule 'views >' has no threshold: {FORM}"),
        ("views > ", f"alert rule 'views > ' has no threshold: {FORM}"),
        ("views > lots", "alert rule 'views > lots': threshold 'lots' is not a number"),
        ("views > 1_000", "alert rule 'views > 1_000': threshold '1_000' is not a number"),
        ("views > 10 %", "alert rule 'views > 10 %': threshold '10 %' is not a number"),
        ("views > 0x10", "alert rule 'views > 0x10': threshold '0x10' is not a number"),
        ("views > \u0661", "alert rule 'views > \u0661': threshold '\u0661' is not a number"),
        ("views > nan", "alert rule 'views > nan': threshold 'nan' is not a finite number"),
        ("views > -inf", "alert rule 'views > -inf': threshold '-inf' is not a finite number"),
        (
            "views > Infinity",
            "alert rule 'views > Infinity': threshold 'Infinity' is not a finite number",
        ),
        ("views > 1e999", "alert rule 'views > 1e999': threshold '1e999' is not a finite number"),
        ("> 5", f"alert rule '> 5': no aggregate named: {FORM}"),
        (
            "latency-p99 > 5",
            "alert rule 'latency-p99 > 5': aggregate name 'latency-p99' is not an identifier "
            "(ASCII letters, digits and underscores, not starting with a digit)",
        ),
        (
            "9lives > 5",
            "alert rule '9lives > 5': aggregate name '9lives' is not an identifier "
            "(ASCII letters, digits and underscores, not starting with a digit)",
        ),
        (
            "vues\u00e9 > 5",
            "alert rule 'vues\u00e9 > 5': aggregate name 'vues\u00e9' is not an identifier "
            "(ASCII letters, digits and underscores, not starting with a digit)",
        ),
    ],
)
def test_bad_rules_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        rule(text)
    assert str(raised.value) == message


def test_an_unknown_severity_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError) as raised:
        rule("views > 1", severity="fatal")
    assert str(raised.value) == (
        "alert rule 'views > 1': unknown severity 'fatal': use one of info, warning, critical"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("views", "=>", 1), f"bad alert rule: unknown operator '=>': use one of {OPS}"),
        (("views", ">", math.nan), "bad alert rule: threshold nan is not a finite number"),
        (("views", ">", True), "bad alert rule: threshold True is not a number"),
        (("views", ">", "5"), "bad alert rule: threshold '5' is not a number"),
        (("a b", ">", 1), "bad alert rule: aggregate name 'a b' is not an identifier"),
        (("views", ">", 1, "loud"), "bad alert rule: unknown severity 'loud'"),
    ],
)
def test_rules_built_directly_are_checked_too(arguments: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        AlertRule(*arguments)


@given(
    aggregate=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    operator=st.sampled_from(OPERATORS),
    threshold=st.one_of(
        st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False)
    ),
    severity=st.sampled_from(SEVERITIES),
)
def test_the_canonical_text_parses_back_to_the_same_rule(
    aggregate: str, operator: str, threshold: float, severity: str
) -> None:
    original = AlertRule(aggregate, operator, threshold, severity)
    assert rule(original.text, severity) == original


# -- breached ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "below", "equal", "above"),
    [
        (">", False, False, True),
        (">=", False, True, True),
        ("<", True, False, False),
        ("<=", True, True, False),
        ("==", False, True, False),
        ("!=", True, False, True),
    ],
)
def test_breached_for_every_operator_at_the_boundary(
    operator: str, below: bool, equal: bool, above: bool
) -> None:
    limit = AlertRule("x", operator, 100)
    assert [limit.breached(99), limit.breached(100), limit.breached(101)] == [below, equal, above]
    assert [limit.breached(99.999), limit.breached(100.0), limit.breached(100.001)] == [
        below,
        equal,
        above,
    ]


@pytest.mark.parametrize("value", [None, True, False, "1000000", [5], {"a": 1}, math.nan])
@pytest.mark.parametrize("operator", OPERATORS)
def test_non_numbers_never_breach(value: Any, operator: str) -> None:
    assert AlertRule("x", operator, 0).breached(value) is False


def test_large_integers_compare_exactly() -> None:
    assert AlertRule("x", ">", 2**63).breached(2**63 + 1)
    assert not AlertRule("x", "==", 2**53).breached(2**53 + 1)


def test_infinite_values_compare() -> None:
    assert AlertRule("x", ">", 10**9).breached(math.inf)
    assert AlertRule("x", "<", 0).breached(-math.inf)


# -- check_rules ------------------------------------------------------------------------


def test_rules_on_known_numeric_aggregates_pass() -> None:
    check_rules(
        "page-views", [rule("views > 1000"), rule("latency_p99 >= 500")], [*page_view_aggregates()]
    )
    check_rules(
        "device-sessions",
        [rule("battery_last < 10"), rule("temperature_mean > 30")],
        device_aggregates(),
    )
    firsts: list[tuple[str, Aggregator[Any]]] = [("v", First())]
    check_rules("first", [rule("v > 1")], firsts)


def test_an_unknown_aggregate_names_the_pipeline_the_rule_and_the_known_ones() -> None:
    with pytest.raises(ValueError) as raised:
        check_rules("page-views", [rule("viewz > 10")], page_view_aggregates())
    assert str(raised.value) == (
        "pipeline 'page-views': alert rule 'viewz > 10' names an unknown aggregate 'viewz'; "
        "known aggregates: views, revenue, latency_min, latency_max, latency_p99, unique_users"
    )


def test_a_top_k_aggregate_is_refused() -> None:
    with pytest.raises(ValueError) as raised:
        check_rules("device-sessions", [rule("top_errors > 1")], device_aggregates())
    assert str(raised.value) == (
        "pipeline 'device-sessions': alert rule 'top_errors > 1' names aggregate 'top_errors' "
        "(top_k), whose results are lists, not numbers; numeric aggregates: readings, "
        "temperature_mean, temperature_max, temperature_p95, battery_first, battery_last"
    )


def test_a_pipeline_with_no_aggregates_says_so() -> None:
    with pytest.raises(ValueError, match=r"known aggregates: \(none\)"):
        check_rules("empty", [rule("x > 1")], [])
    with pytest.raises(ValueError, match=r"numeric aggregates: \(none\)$"):
        tops: list[tuple[str, Aggregator[Any]]] = [("t", TopK())]
        check_rules("tops", [rule("t > 1")], tops)


def test_duplicate_rules_are_refused_whatever_their_severity() -> None:
    aggregates: list[tuple[str, Aggregator[Any]]] = [("views", Count()), ("peak", Max())]
    with pytest.raises(ValueError) as raised:
        check_rules("p", [rule("views > 10"), rule("views>10.0", severity="critical")], aggregates)
    assert str(raised.value) == "pipeline 'p': alert rule 'views > 10' is given twice"
    check_rules("p", [rule("views > 10"), rule("views >= 10")], aggregates)


# -- alerts and their ids ---------------------------------------------------------------


def test_alerts_for_gives_one_alert_per_breached_rule_in_rule_order() -> None:
    rules = [rule("views < 5"), rule("views > 100", "critical"), rule("latency_max >= 300")]
    values = {"views": 120, "latency_max": 300.0, "revenue": None}
    alerts = alerts_for("page-views", rules, "/home", START, END, values)
    assert [a.rule for a in alerts] == [rules[1], rules[2]]
    assert [a.value for a in alerts] == [120, 300.0]
    first = alerts[0]
    assert (first.pipeline, first.key, first.window_start_ms, first.window_end_ms) == (
        "page-views",
        "/home",
        START,
        END,
    )
    assert first.values == values
    assert first.alert_id == alert_id("page-views", rules[1], "/home", START, END)
    assert alerts_for("page-views", rules, "/home", START, END, {"views": 50}) == []


def documented_id(pipeline: str, text: str, key: str, start: int, end: int) -> str:
    encoded = json.dumps(
        [pipeline, text, key, start, end], ensure_ascii=True, separators=(",", ":")
    )
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()[:32]


ids = st.tuples(
    st.text(min_size=1, max_size=20),
    st.sampled_from([rule("views > 1000"), rule("views >= 1000"), rule("latency_p99 < 2.5")]),
    st.text(max_size=40),
    st.integers(0, 2**45),
    st.integers(1, 2**20),
)


@given(ids)
def test_alert_ids_follow_their_documented_encoding(
    parts: tuple[str, AlertRule, str, int, int],
) -> None:
    pipeline, limit, key, start, size = parts
    found = alert_id(pipeline, limit, key, start, start + size)
    assert found == documented_id(pipeline, limit.text, key, start, start + size)
    assert re.fullmatch(r"[0-9a-f]{32}", found)


@given(ids, ids)
def test_alert_ids_differ_when_any_part_differs(
    one: tuple[str, AlertRule, str, int, int], other: tuple[str, AlertRule, str, int, int]
) -> None:
    def identity(parts: tuple[str, AlertRule, str, int, int]) -> tuple[Any, ...]:
        pipeline, limit, key, start, size = parts
        return (pipeline, limit.text, key, start, start + size)

    def of(parts: tuple[str, AlertRule, str, int, int]) -> str:
        pipeline, limit, key, start, size = parts
        return alert_id(pipeline, limit, key, start, start + size)

    assert (of(one) == of(other)) == (identity(one) == identity(other))


def test_the_id_ignores_severity_and_separators_cannot_collide() -> None:
    loud = rule("views > 1", "critical")
    assert alert_id("p", loud, "k", 0, 1) == alert_id("p", rule("views > 1"), "k", 0, 1)
    assert alert_id("a,b", loud, "c", 0, 1) != alert_id("a", loud, "b,c", 0, 1)


# -- subject, body, attributes ----------------------------------------------------------


def make_alert(
    key: str = "/home",
    pipeline: str = "page-views",
    limit: AlertRule | None = None,
    start: int = START,
    end: int = END,
    values: dict[str, Any] | None = None,
) -> Alert:
    limit = limit or rule("views > 1000")
    values = values if values is not None else {"views": 1500}
    return Alert(
        alert_id(pipeline, limit, key, start, end), pipeline, limit, key, start, end, 1500, values
    )


def test_the_subject_reads_well() -> None:
    assert alert_subject(make_alert()) == (
        "[warning] page-views: views > 1000 for /home, 2026-11-27 10:00-10:01 UTC"
    )
    session = make_alert(start=START + 10_000, end=START + 15 * 60_000)
    assert alert_subject(session).endswith(", 2026-11-27 10:00:10-10:15:00 UTC")
    midnight = make_alert(
        start=START + 14 * 3_600_000 - 30_000, end=START + 14 * 3_600_000 + 30_000
    )
    assert alert_subject(midnight).endswith(", 2026-11-27 23:59:30-2026-11-28 00:00:30 UTC")


def test_a_long_key_is_cut_and_the_window_kept() -> None:
    subject = alert_subject(make_alert(key="/" + "a" * 300))
    assert len(subject) == MAX_SUBJECT_CHARS
    assert subject.endswith("a..., 2026-11-27 10:00-10:01 UTC")


def test_non_ascii_and_control_characters_become_question_marks() -> None:
    subject = alert_subject(make_alert(key="caf\u00e9\n\t\x7f\U0001f600"))
    assert subject == (
        "[warning] page-views: views > 1000 for caf?????, 2026-11-27 10:00-10:01 UTC"
    )


@given(
    key=st.text(max_size=300),
    pipeline=st.text(min_size=1, max_size=150),
    limit=st.builds(
        AlertRule,
        aggregate=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,80}", fullmatch=True),
        operator=st.sampled_from(OPERATORS),
        threshold=st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
        severity=st.sampled_from(SEVERITIES),
    ),
    start=st.integers(-(2**62), 2**62),
    size=st.integers(1, 2**40),
)
def test_every_subject_is_valid_for_sns(
    key: str, pipeline: str, limit: AlertRule, start: int, size: int
) -> None:
    subject = alert_subject(make_alert(key, pipeline, limit, start, start + size))
    assert 0 < len(subject) <= MAX_SUBJECT_CHARS < 100
    assert re.fullmatch(r"[\x20-\x7e]+", subject)
    assert not subject.startswith(" ")


def test_the_body_holds_every_documented_field() -> None:
    alert = make_alert(values={"views": 1500, "p99": 2.5, "top": [("a", 2)], "nan": math.nan})
    body = alert_body(alert)
    assert body == {
        "version": 1,
        "alert_id": alert.alert_id,
        "pipeline": "page-views",
        "rule": "views > 1000",
        "aggregate": "views",
        "operator": ">",
        "threshold": 1000,
        "severity": "warning",
        "key": "/home",
        "window_start": "2026-11-27T10:00:00Z",
        "window_end": "2026-11-27T10:01:00Z",
        "window_start_ms": START,
        "window_end_ms": END,
        "value": 1500,
        "values": {"views": 1500, "p99": 2.5, "top": [["a", 2]], "nan": None},
    }
    assert json.loads(json.dumps(body, allow_nan=False)) == body


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_json_safe_values_survive_strict_json(value: Any) -> None:
    safe = json_safe(value)
    assert json.loads(json.dumps(safe, allow_nan=False)) == safe


def test_attributes_are_non_empty_valid_text() -> None:
    alert = make_alert(key="", pipeline="pv\ufffe\x00", limit=rule("views > 1", "critical"))
    assert alert_attributes(alert) == {
        "pipeline": "pv\ufffd\ufffd",
        "key": "(empty)",
        "rule": "views > 1",
        "severity": "critical",
    }


def test_sinks_take_rules_as_text_or_alone_and_refuse_anything_else() -> None:
    from processors.pipeline import Sinks

    assert Sinks(alerts=("views > 1",)).alerts == (rule("views > 1"),)
    assert Sinks(alerts=rule("views > 1")).alerts == (rule("views > 1"),)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a tuple of rules"):
        Sinks(alerts=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="holds 3: each must be a rule"):
        Sinks(alerts=(3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown operator '>>'"):
        Sinks(alerts=("views >> 1",))  # type: ignore[arg-type]
