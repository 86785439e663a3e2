"""Rendering window results as JSON, CSV or an aligned table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from processors.alerts import json_safe
from processors.windowing.results import WindowResult
from schemas.timestamps import format_iso8601

if TYPE_CHECKING:
    from processors.top_query import TopKeys

FORMATS = ("table", "json", "csv")


def result_dict(result: WindowResult) -> dict[str, Any]:
    """The shape design.md section 8 gives for one window of one key."""
    return {
        "pipeline": result.pipeline,
        "key": result.key,
        "window_start": format_iso8601(result.window.start_ms),
        "window_end": format_iso8601(result.window.end_ms),
        "final": result.final,
        **result.values,
    }


def dumps(value: Any, indent: bool = False) -> str:
    """``value`` as JSON text: orjson's, or, for what orjson cannot write (integers
    beyond 64 bits: a sum of large integers stays exact), the standard library's with
    the same layout (NaN and infinities as null, as orjson writes them)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    except TypeError:
        return json.dumps(
            json_safe(value),
            ensure_ascii=False,
            allow_nan=False,
            indent=2 if indent else None,
            separators=(",", ": ") if indent else (",", ":"),
        )


def top_dict(ranked: TopKeys) -> dict[str, Any]:
    """The shape ``top --format json`` prints and the API's ``/top`` answers."""
    return {
        "pipeline": ranked.pipeline,
        "aggregate": ranked.aggregate,
        "window_start": format_iso8601(ranked.window.start_ms),
        "window_end": format_iso8601(ranked.window.end_ms),
        "final": ranked.final,
        "keys": ranked.keys,
        "top": [
            {"rank": rank, "key": key, "value": value}
            for rank, (key, value) in enumerate(ranked.top, start=1)
        ],
    }


def render_json(results: Sequence[WindowResult]) -> str:
    return dumps([result_dict(r) for r in results], indent=True)


def render_csv(results: Sequence[WindowResult], columns: Sequence[str]) -> str:
    return "".join(csv_lines(results, columns))


def csv_lines(results: Iterable[WindowResult], columns: Sequence[str]) -> Iterator[str]:
    """The header, then one line per result, each ending in a newline."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        lineterminator="\n",
        fieldnames=["pipeline", "key", "window_start", "window_end", "final", *columns],
    )
    writer.writeheader()
    yield buffer.getvalue()
    for result in results:
        buffer.seek(0)
        buffer.truncate()
        row = result_dict(result)
        # Lists (a top-k) go into one cell as JSON, the same text json prints.
        writer.writerow(
            {
                name: dumps(value) if isinstance(value, list | dict) else value
                for name, value in row.items()
            }
        )
        yield buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):  # a top-k: [[item, count], ...]
        if not value:
            return "-"
        return ", ".join(
            f"{pair[0]}: {pair[1]:,}" if isinstance(pair, list) and len(pair) == 2 else str(pair)
            for pair in value
        )
    return str(value)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def render_table(results: Sequence[WindowResult], columns: Sequence[str]) -> str:
    """Aligned columns: text left, numbers right; ISO times; final windows marked."""
    lines = table_lines(results, columns)
    if not results:
        lines.append("(no windows)")
    return "\n".join(lines)


def table_lines(
    results: Sequence[WindowResult], columns: Sequence[str], min_widths: list[int] | None = None
) -> list[str]:
    """:func:`render_table`'s lines: the header, a rule, then one line per result. With
    ``min_widths``, columns are at least that wide, and the list is updated to the widths
    used (so that later lines of a live view line up with earlier ones)."""
    header = ["key", "window_start", "window_end", "final", *columns]
    rows = [
        [
            r.key,
            format_iso8601(r.window.start_ms),
            format_iso8601(r.window.end_ms),
            "final" if r.final else "open",
            *(_cell(r.values[c]) for c in columns),
        ]
        for r in results
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]
    if min_widths is not None:
        if not min_widths:
            min_widths.extend(widths)
        widths = [max(a, b) for a, b in zip(widths, min_widths, strict=True)]
        min_widths[:] = widths
    numeric = [False] * 4 + [all(_is_number(r.values[c]) for r in results) for c in columns]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if is_num else cell.ljust(width)
            for cell, width, is_num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return out


def render(results: Sequence[WindowResult], columns: Sequence[str], fmt: str) -> str:
    if fmt == "json":
        return render_json(results)
    if fmt == "csv":
        return render_csv(results, columns).rstrip("\n")
    return render_table(results, columns)


def reason_counts(by_reason: dict[str, int]) -> str:
    """Dead letters by reason for a summary line: ``invalid 5, late 4``, or ``none``."""
    return ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none"
