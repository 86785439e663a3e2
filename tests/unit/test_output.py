"""Rendering window results: JSON (design.md section 8), CSV and the aligned table."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from datetime import datetime
from typing import Any

import pytest

from processors.windowing.results import WindowResult
from processors.windowing.windows import Window
from shardflow.output import FORMATS, render, render_csv, render_json, render_table

COLUMNS = ["views", "revenue", "latency_min", "latency_max", "latency_p99", "unique_users"]
FIXED = ["pipeline", "key", "window_start", "window_end", "final"]


def ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


T0 = ms("2026-11-27T10:00:00Z")


def result(
    key: str = "/home",
    start: int = T0,
    final: bool = True,
    size: int = 60_000,
    **values: Any,
) -> WindowResult:
    defaults: dict[str, Any] = {
        "views": 3,
        "revenue": 12.5,
        "latency_min": 40.0,
        "latency_max": 120.5,
        "latency_p99": 119.73028534335387,  # a sketch's estimate: a float with many digits
        "unique_users": 2,
    }
    defaults.update(values)
    return WindowResult("page-views", key, Window(start, start + size), final, defaults, 1)


RESULTS = [
    result("/home", T0, True, views=1234567, revenue=1999.999, unique_users=1234),
    result("/search", T0 + 60_000, False, views=2, revenue=0.0, latency_min=None),
    result(
        "/a-much-longer-page-name",
        T0,
        True,
        views=0,
        latency_max=None,
        latency_p99=None,
        unique_users=0,
    ),
]


# --- JSON ----------------------------------------------------------------------------------


def test_json_is_one_array_in_the_documented_shape() -> None:
    parsed = json.loads(render_json([result()]))
    assert parsed == [
        {
            "pipeline": "page-views",
            "key": "/home",
            "window_start": "2026-11-27T10:00:00Z",
            "window_end": "2026-11-27T10:01:00Z",
            "final": True,
            "views": 3,
            "revenue": 12.5,
            "latency_min": 40.0,
            "latency_max": 120.5,
            "latency_p99": 119.73028534335387,
            "unique_users": 2,
        }
    ]
    assert list(parsed[0]) == [*FIXED, *COLUMNS]


def test_json_keeps_order_types_and_nulls() -> None:
    parsed = json.loads(render_json(RESULTS))
    assert [p["key"] for p in parsed] == ["/home", "/search", "/a-much-longer-page-name"]
    assert [p["final"] for p in parsed] == [True, False, True]
    assert parsed[0]["views"] == 1234567
    assert isinstance(parsed[0]["views"], int)
    assert parsed[1]["latency_min"] is None
    assert parsed[0]["unique_users"] == 1234 and isinstance(parsed[0]["unique_users"], int)
    assert parsed[2]["latency_p99"] is None and parsed[2]["unique_users"] == 0
    assert parsed[1]["window_start"] == "2026-11-27T10:01:00Z"
    assert parsed[1]["window_end"] == "2026-11-27T10:02:00Z"
    for item in parsed:
        assert list(item) == [*FIXED, *COLUMNS]
        for field in ("window_start", "window_end"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", item[field])


def test_json_times_are_utc_and_keep_milliseconds() -> None:
    parsed = json.loads(render_json([result(start=T0 + 250, size=1000)]))
    assert parsed[0]["window_start"] == "2026-11-27T10:00:00.250Z"
    assert parsed[0]["window_end"] == "2026-11-27T10:00:01.250Z"
    epoch = json.loads(render_json([result(start=0, size=60_000)]))[0]
    assert epoch["window_start"] == "1970-01-01T00:00:00Z"


def test_json_of_nothing_is_an_empty_array() -> None:
    assert json.loads(render_json([])) == []
    assert json.loads(render([], COLUMNS, "json")) == []


def test_json_keeps_non_ascii_keys() -> None:
    parsed = json.loads(render_json([result("/café/ü")]))
    assert parsed[0]["key"] == "/café/ü"


# --- CSV -----------------------------------------------------------------------------------


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_has_a_header_and_one_row_per_result() -> None:
    rows = read_csv(render_csv(RESULTS, COLUMNS))
    assert rows[0] == [*FIXED, *COLUMNS]
    assert len(rows) == 1 + len(RESULTS)
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["pipeline"] == "page-views"
    assert first["key"] == "/home"
    assert first["window_start"] == "2026-11-27T10:00:00Z"
    assert first["window_end"] == "2026-11-27T10:01:00Z"
    assert first["views"] == "1234567"
    assert float(first["revenue"]) == pytest.approx(1999.999)
    assert float(first["latency_p99"]) == 119.73028534335387  # every digit: lossless
    assert first["unique_users"] == "1234"
    finals = [dict(zip(rows[0], row, strict=True))["final"] for row in rows[1:]]
    assert finals[0] == finals[2] != finals[1]


def test_csv_quotes_keys_with_commas_and_quotes() -> None:
    text = render_csv([result('/search?q=a,b "c"')], COLUMNS)
    rows = read_csv(text)
    assert rows[1][1] == '/search?q=a,b "c"'
    assert len(rows[1]) == len(rows[0])


def test_csv_of_nothing_is_just_the_header() -> None:
    rows = read_csv(render_csv([], COLUMNS))
    assert rows == [[*FIXED, *COLUMNS]]


def test_render_csv_has_no_trailing_blank_line() -> None:
    text = render(RESULTS, COLUMNS, "csv")
    rows = read_csv(text)
    assert len(rows) == 1 + len(RESULTS)
    assert text.splitlines()[-1].strip()


# --- table ---------------------------------------------------------------------------------


def column_spans(rule: str) -> list[tuple[int, int]]:
    """(start, end) of each column from the ``----  ----`` rule under the header."""
    return [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]


def test_table_columns_line_up() -> None:
    lines = render_table(RESULTS, COLUMNS).splitlines()
    header, rule, *rows = lines
    spans = column_spans(rule)
    assert len(spans) == 4 + len(COLUMNS)
    assert len(rows) == len(RESULTS)
    # The last column is numeric and right-aligned, so every line has the same length.
    assert {len(line) for line in lines} == {len(rule)}
    for line in [header, *rows]:
        for start, end in spans:
            assert line[start:end].strip(), (line, start, end)
        # Two spaces between columns.
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert line[end:start] == "  "


def test_table_aligns_text_left_and_numbers_right() -> None:
    lines = render_table(RESULTS, COLUMNS).splitlines()
    spans = column_spans(lines[1])
    for line in lines[2:]:
        for i, (start, end) in enumerate(spans):
            cell = line[start:end]
            if i < 4:
                assert not cell[0].isspace(), cell
            else:
                assert not cell[-1].isspace(), cell


def test_table_cells() -> None:
    lines = render_table(RESULTS, COLUMNS).splitlines()
    spans = column_spans(lines[1])
    cells = [[line[s:e].strip() for s, e in spans] for line in lines]
    assert cells[0] == ["key", "window_start", "window_end", "final", *COLUMNS]
    home, search, longer = cells[2:]
    assert home[:4] == ["/home", "2026-11-27T10:00:00Z", "2026-11-27T10:01:00Z", "final"]
    assert home[4:6] == ["1,234,567", "2,000.00"]
    assert home[8:10] == ["119.73", "1,234"]  # p99 with two decimals, users as a count
    assert search[3] == "open"
    assert search[6] == "-"
    assert search[8:10] == ["119.73", "2"]
    assert longer[0] == "/a-much-longer-page-name"
    assert longer[4] == "0"
    assert longer[7] == "-"
    assert longer[8:10] == ["-", "0"]


def test_table_marks_final_and_open_windows() -> None:
    text = render_table([result(final=True), result("/b", final=False)], COLUMNS)
    rows = text.splitlines()[2:]
    assert " final " in rows[0]
    assert " open " in rows[1]
    assert "final" not in rows[1]


def test_empty_table_says_no_windows() -> None:
    lines = render_table([], COLUMNS).splitlines()
    assert lines[0].split() == ["key", "window_start", "window_end", "final", *COLUMNS]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2:] == ["(no windows)"]
    assert render([], COLUMNS, "table") == "\n".join(lines)


def test_table_without_aggregate_columns() -> None:
    lines = render_table([result()], []).splitlines()
    assert lines[0].split() == ["key", "window_start", "window_end", "final"]
    assert lines[2].split() == ["/home", "2026-11-27T10:00:00Z", "2026-11-27T10:01:00Z", "final"]


# --- dispatch ------------------------------------------------------------------------------


def test_formats_are_the_documented_ones() -> None:
    assert set(FORMATS) == {"table", "json", "csv"}


def test_render_dispatches_on_format() -> None:
    assert render(RESULTS, COLUMNS, "json") == render_json(RESULTS)
    assert render(RESULTS, COLUMNS, "table") == render_table(RESULTS, COLUMNS)
    assert read_csv(render(RESULTS, COLUMNS, "csv")) == read_csv(render_csv(RESULTS, COLUMNS))


def test_a_top_k_reads_as_item_and_count_in_a_table_and_as_json_in_csv() -> None:
    window = Window(0, 60_000)
    results = [
        WindowResult(
            "device-sessions", "d1", window, True, {"n": 3, "top": [["E4", 2], ["E1", 1]]}, 1
        ),
        WindowResult("device-sessions", "d2", window, True, {"n": 1_200, "top": []}, 1),
    ]
    table = render_table(results, ["n", "top"]).splitlines()
    assert table[2].endswith("    3  E4: 2, E1: 1")  # numbers right, the list left
    assert table[3].endswith("1,200  -")
    rows = list(csv.DictReader(io.StringIO(render_csv(results, ["n", "top"]))))
    assert [json.loads(row["top"]) for row in rows] == [[["E4", 2], ["E1", 1]], []]
    assert json.loads(render_json(results))[0]["top"] == [["E4", 2], ["E1", 1]]
