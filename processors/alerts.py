"""Alert rules on final windows, and the alerts they raise. Pure.

A rule is ``<aggregate> <operator> <number>`` (``"views > 1000"``). Each final window whose
aggregate breaches a rule raises one :class:`Alert`, whose id is stable: the same pipeline,
rule text, key and window give the same id on every run and machine, so a sink (or the
store that records what was sent) can tell an alert sent before a crash from a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from processors.windowing.aggregators import Aggregator
from processors.windowing.top_k import TopK
from schemas.timestamps import format_iso8601

OPERATORS = (">", ">=", "<", "<=", "==", "!=")
SEVERITIES = ("info", "warning", "critical")

BODY_VERSION = 1
MAX_SUBJECT_CHARS = 99
"""SNS: a subject is "less than 100 characters long", with no line breaks or control
characters; ASCII only keeps it valid under the older, stricter rule too."""

_RULE_FORM = "<aggregate> <operator> <number>, e.g. 'views > 1000'"
_OPERATOR_CHARS = re.compile(r"[<>=!]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NOT_FINITE = frozenset({"nan", "inf", "infinity"})
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_NOT_VALID_TEXT = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""A character outside the XML character set, which SNS and SQS attribute values allow."""


class AlertDeliveryError(Exception):
    """Alerts a sink could not deliver; the caller must not record them as sent."""


def _allowed(options: Sequence[str]) -> str:
    return ", ".join(options)


def _format_threshold(threshold: float) -> str:
    if isinstance(threshold, int):
        return str(threshold)
    if threshold.is_integer() and abs(threshold) < 1e16:
        return str(int(threshold))
    return repr(threshold)


def _check_parts(aggregate: str, operator: str, threshold: Any, severity: str) -> str | None:
    """What is wrong with a rule's parts, or None."""
    if not aggregate:
        return f"no aggregate named: expected {_RULE_FORM}"
    if not aggregate.isidentifier() or not aggregate.isascii():
        return (
            f"aggregate name {aggregate!r} is not an identifier "
            "(ASCII letters, digits and underscores, not starting with a digit)"
        )
    if operator not in OPERATORS:
        return f"unknown operator {operator!r}: use one of {_allowed(OPERATORS)}"
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return f"threshold {threshold!r} is not a number"
    if isinstance(threshold, float) and not math.isfinite(threshold):
        return f"threshold {threshold!r} is not a finite number"
    if severity not in SEVERITIES:
        return f"unknown severity {severity!r}: use one of {_allowed(SEVERITIES)}"
    return None


@dataclass(frozen=True)
class AlertRule:
    """Alert when ``<aggregate> <operator> <threshold>`` holds for a final window."""

    aggregate: str
    operator: str
    threshold: float
    severity: str = "warning"

    def __post_init__(self) -> None:
        problem = _check_parts(self.aggregate, self.operator, self.threshold, self.severity)
        if problem is not None:
            raise ValueError(f"bad alert rule: {problem}")

    @property
    def text(self) -> str:
        """The canonical text, e.g. ``"views > 1000"``; :func:`rule` reads it back."""
        return f"{self.aggregate} {self.operator} {_format_threshold(self.threshold)}"

    def breached(self, value: Any) -> bool:
        """True when ``value`` is a number (not a bool, not NaN) that meets the rule."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        threshold = self.threshold
        match self.operator:
            case ">":
                return value > threshold
            case ">=":
                return value >= threshold
            case "<":
                return value < threshold
            case "<=":
                return value <= threshold
            case "==":
                return value == threshold
            case _:
                return value != threshold


def rule(text: str, severity: str = "warning") -> AlertRule:
    """Parse ``<aggregate> <operator> <number>``: ``"views > 1000"``, ``"latency_p99>=500"``,
    ``"temperature_min < -1.5e1"``. Raises ValueError saying what is wrong."""
    if not text.strip():
        raise ValueError(f"empty alert rule: expected {_RULE_FORM}")
    found = _OPERATOR_CHARS.search(text)
    if found is None:
        raise ValueError(
            f"alert rule {text!r} has no operator: expected {_RULE_FORM}, "
            f"with one of {_allowed(OPERATORS)}"
        )
    aggregate = text[: found.start()].strip()
    operator = found.group()
    number = text[found.end() :].strip()
    problem = _check_parts(aggregate, operator, 0, severity)
    if problem is not None:
        raise ValueError(f"alert rule {text!r}: {problem}")
    if not number:
        raise ValueError(f"alert rule {text!r} has no threshold: expected {_RULE_FORM}")
    if _INTEGER.fullmatch(number):
        return AlertRule(aggregate, operator, int(number), severity)
    infinite = number.lower().lstrip("+-") in _NOT_FINITE
    if infinite or (_NUMBER.fullmatch(number) and not math.isfinite(float(number))):
        raise ValueError(f"alert rule {text!r}: threshold {number!r} is not a finite number")
    if _NUMBER.fullmatch(number) is None:
        raise ValueError(f"alert rule {text!r}: threshold {number!r} is not a number")
    return AlertRule(aggregate, operator, float(number), severity)


def check_rules(
    pipeline_name: str,
    rules: Sequence[AlertRule],
    aggregates: Sequence[tuple[str, Aggregator[Any]]],
) -> None:
    """Raise ValueError unless every rule names a numeric aggregate of the pipeline, once.

    TopK results are lists, so rules on them are refused; First and Last may hold numbers.
    """
    by_name = dict(aggregates)
    known = _allowed(list(by_name)) or "(none)"
    seen: set[str] = set()
    for each in rules:
        if each.text in seen:
            raise ValueError(f"pipeline {pipeline_name!r}: alert rule {each.text!r} is given twice")
        seen.add(each.text)
        aggregator = by_name.get(each.aggregate)
        if aggregator is None:
            raise ValueError(
                f"pipeline {pipeline_name!r}: alert rule {each.text!r} names an unknown "
                f"aggregate {each.aggregate!r}; known aggregates: {known}"
            )
        if isinstance(aggregator, TopK):
            numeric = _allowed([n for n, a in by_name.items() if not isinstance(a, TopK)])
            raise ValueError(
                f"pipeline {pipeline_name!r}: alert rule {each.text!r} names aggregate "
                f"{each.aggregate!r} ({aggregator.kind}), whose results are lists, not "
                f"numbers; numeric aggregates: {numeric or '(none)'}"
            )


@dataclass(frozen=True)
class Alert:
    """One rule breached by one final window of one key."""

    alert_id: str
    pipeline: str
    rule: AlertRule
    key: str
    window_start_ms: int
    window_end_ms: int
    value: float | int
    values: Mapping[str, Any]
    """Every aggregate of the final window."""


def alert_id(
    pipeline: str, rule: AlertRule, key: str, window_start_ms: int, window_end_ms: int
) -> str:
    """The first 32 hex digits of the SHA-256 of the compact, ASCII-only JSON list
    ``[pipeline, rule.text, key, window_start_ms, window_end_ms]``."""
    encoded = json.dumps(
        [pipeline, rule.text, key, window_start_ms, window_end_ms],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()[:32]


def alerts_for(
    pipeline: str,
    rules: Sequence[AlertRule],
    key: str,
    window_start_ms: int,
    window_end_ms: int,
    values: Mapping[str, Any],
) -> list[Alert]:
    """One alert per rule that ``values`` (a final window's aggregates) breach, in rule
    order."""
    alerts: list[Alert] = []
    for each in rules:
        value: Any = values.get(each.aggregate)
        if each.breached(value):
            alerts.append(
                Alert(
                    alert_id(pipeline, each, key, window_start_ms, window_end_ms),
                    pipeline,
                    each,
                    key,
                    window_start_ms,
                    window_end_ms,
                    value,
                    dict(values),
                )
            )
    return alerts


def _moment(ms: int) -> datetime | None:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _window_text(start_ms: int, end_ms: int) -> str:
    """``2026-11-27 10:00-10:01 UTC``; seconds when not whole minutes; both dates when
    the window spans midnight."""
    start, end = _moment(start_ms), _moment(end_ms)
    if start is None or end is None:
        return f"{start_ms}-{end_ms} ms"
    with_seconds = start.second or end.second or start_ms % 1000 or end_ms % 1000
    clock = "%H:%M:%S" if with_seconds else "%H:%M"
    end_format = clock if start.date() == end.date() else f"%Y-%m-%d {clock}"
    return f"{start.strftime(f'%Y-%m-%d {clock}')}-{end.strftime(end_format)} UTC"


def _printable(text: str) -> str:
    return _NOT_PRINTABLE_ASCII.sub("?", text)


def alert_subject(alert: Alert) -> str:
    """``[warning] page-views: views > 1000 for /home, 2026-11-27 10:00-10:01 UTC``.

    Printable ASCII only (anything else becomes ``?``), at most :data:`MAX_SUBJECT_CHARS`
    characters, starting with ``[``. A long key is cut (with ``...``) before anything else.
    """
    head = _printable(f"[{alert.rule.severity}] {alert.pipeline}: {alert.rule.text} for ")
    tail = _printable(f", {_window_text(alert.window_start_ms, alert.window_end_ms)}")
    key = _printable(alert.key)
    room = MAX_SUBJECT_CHARS - len(head) - len(tail)
    if len(key) > room >= 4:
        key = key[: room - 3] + "..."
    subject = head + key + tail
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[: MAX_SUBJECT_CHARS - 3] + "..."
    return subject


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data: tuples and lists become lists, mapping keys strings,
    NaN and infinities None, and anything else that JSON cannot hold its ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)


def _iso(ms: int) -> str | None:
    try:
        return format_iso8601(ms)
    except (OverflowError, ValueError, OSError):
        return None


def alert_body(alert: Alert) -> dict[str, Any]:
    """The alert as the JSON object subscribers receive (``version`` 1)."""
    return {
        "version": BODY_VERSION,
        "alert_id": alert.alert_id,
        "pipeline": alert.pipeline,
        "rule": alert.rule.text,
        "aggregate": alert.rule.aggregate,
        "operator": alert.rule.operator,
        "threshold": alert.rule.threshold,
        "severity": alert.rule.severity,
        "key": alert.key,
        "window_start": _iso(alert.window_start_ms),
        "window_end": _iso(alert.window_end_ms),
        "window_start_ms": alert.window_start_ms,
        "window_end_ms": alert.window_end_ms,
        "value": json_safe(alert.value),
        "values": json_safe(alert.values),
    }


def attribute_text(value: str) -> str:
    """A message attribute value SNS and SQS accept: characters outside their set become
    U+FFFD, and an empty value ``(empty)``."""
    return _NOT_VALID_TEXT.sub("\ufffd", value) or "(empty)"


def alert_attributes(alert: Alert) -> dict[str, str]:
    """String attributes for SNS subscription filter policies."""
    return {
        "pipeline": attribute_text(alert.pipeline),
        "key": attribute_text(alert.key),
        "rule": attribute_text(alert.rule.text),
        "severity": attribute_text(alert.rule.severity),
    }
