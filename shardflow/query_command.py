"""``shardflow query`` and ``shardflow top``: the aggregates from the terminal.

``query`` reads page by page (so a large range is never held whole, except for the
table, which aligns its columns over every row), prints one page with ``--limit`` (and
the cursor of the next on standard error), and with ``--follow`` keeps printing windows
as they change or become final. ``top`` ranks the keys of one window by an aggregate.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from processors.pipeline import Pipeline
from processors.query_pages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    QueryError,
    decode_cursor,
    iter_pages,
    query_page,
    window_step_ms,
)
from processors.top_query import TopKeys, check_rankable, top_keys
from processors.windowing.results import WindowResult, final_frontier
from processors.windowing.windows import SessionWindows
from schemas.timestamps import format_iso8601
from shardflow.output import (
    FORMATS,
    csv_lines,
    dumps,
    render,
    result_dict,
    table_lines,
    top_dict,
)
from shardflow.times import UNITS_MS, now_ms

FOLLOW_DEFAULT_SINCE_MS = 15 * UNITS_MS["m"]
FOLLOW_NUMBER_WIDTH = 10


def add_arguments(
    commands: Any, parse_time: Callable[[str], int], positive_float: Callable[[str], float]
) -> None:
    """The ``query`` and ``top`` sub-commands of ``commands`` (an argparse subparsers)."""
    query = commands.add_parser(
        "query",
        help="windows of a pipeline, merged across shards",
        description="Windows of PIPELINE overlapping [--since, --until), merged across "
        "shards. Times: ISO-8601, epoch milliseconds, now, or a time ago (15m, 2h, 7d).",
    )
    query.add_argument("pipeline")
    query.add_argument(
        "--key", action="append", metavar="KEY", help="only this key (repeat for several)"
    )
    query.add_argument("--since", type=parse_time, help="windows ending after this time")
    query.add_argument("--until", type=parse_time, help="windows starting before this time")
    query.add_argument("--format", choices=FORMATS, default="table")
    query.add_argument(
        "--limit",
        type=_limit,
        help=f"print at most this many windows (1-{MAX_LIMIT:,}) and, if there are more, "
        "the --cursor of the next page on standard error",
    )
    query.add_argument("--cursor", help="continue after the page that printed this cursor")
    query.add_argument(
        "--follow",
        action="store_true",
        help="keep printing windows as they update or become final (json: one object a "
        "line); --since defaults to 15m; with --until, stop once every window is final",
    )
    query.add_argument(
        "--interval",
        type=positive_float,
        default=2.0,
        help="with --follow: seconds between reads (default 2)",
    )

    top = commands.add_parser(
        "top",
        help="the top keys of one window by an aggregate",
        description="The keys of one window of PIPELINE ranked by a numeric aggregate.",
    )
    top.add_argument("pipeline")
    top.add_argument("--by", required=True, metavar="AGGREGATE", help="rank by this aggregate")
    top.add_argument("--k", type=_k, default=10, help="how many keys (default 10)")
    top.add_argument(
        "--window",
        type=parse_time,
        metavar="TIME",
        help="the window containing this time (default: the latest window with data)",
    )
    top.add_argument("--format", choices=FORMATS, default="table")


def _limit(text: str) -> int:
    return _bounded(text, MAX_LIMIT)


def _k(text: str) -> int:
    from processors.top_query import MAX_K  # noqa: PLC0415

    return _bounded(text, MAX_K)


def _bounded(text: str, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between 1 and {high:,}, got {value}")
    return value


def run_query(
    args: argparse.Namespace,
    store: Any,
    pipeline: Pipeline[Any],
    stop: threading.Event,
    out: TextIO | None = None,
) -> int:
    out = sys.stdout if out is None else out  # looked up now: tests capture it
    keys = sorted(set(args.key or ()))
    columns = pipeline.aggregate_names
    # Mistakes are refused before anything is printed (a csv header, a table's head).
    if args.cursor is not None:
        decode_cursor(args.cursor)
    if args.since is not None and args.until is not None and args.until < args.since:
        raise QueryError(
            f"--until ({format_iso8601(args.until)}) must not be before --since "
            f"({format_iso8601(args.since)})"
        )
    if args.follow:
        return follow(
            store, pipeline, keys, args.since, args.until, args.format, args.interval, stop, out
        )
    if args.limit is not None:
        page = query_page(store, pipeline, keys, args.since, args.until, args.limit, args.cursor)
        print(render(page.results, columns, args.format), file=out)
        if page.next_cursor is not None:
            print(f"more windows: continue with --cursor {page.next_cursor}", file=sys.stderr)
        return 0
    pages = iter_pages(store, pipeline, keys, args.since, args.until, DEFAULT_LIMIT, args.cursor)
    results = (result for page in pages for result in page.results)
    if args.format == "table":
        print(render(list(results), columns, "table"), file=out)
    elif args.format == "csv":
        for line in csv_lines(results, columns):
            out.write(line)
    else:
        _stream_json_array(results, out)
    return 0


def _stream_json_array(results: Iterable[WindowResult], out: TextIO) -> None:
    """One JSON array, written an element at a time (the same text render_json gives)."""
    first = True
    for result in results:
        body = dumps(result_dict(result), indent=True)
        out.write(("[\n" if first else ",\n") + "\n".join("  " + line for line in body.split("\n")))
        first = False
        out.flush()
    out.write("[]\n" if first else "\n]\n")


def follow(
    store: Any,
    pipeline: Pipeline[Any],
    keys: list[str],
    since_ms: int | None,
    until_ms: int | None,
    fmt: str,
    interval_s: float,
    stop: threading.Event,
    out: TextIO,
    clock: Callable[[], int] = now_ms,
) -> int:
    """Print the windows in range, then every window again each time its values or its
    finality change, until ``stop`` is set (or, with ``until_ms``, until every window
    before it is final). Final windows never change, so the range's start moves up to the
    final frontier as the stream goes on."""
    columns = pipeline.aggregate_names
    if since_ms is None:  # the last 15 minutes (before --until, if that is earlier)
        since = min(clock(), until_ms or clock()) - FOLLOW_DEFAULT_SINCE_MS
    else:
        since = since_ms
    done_at = None if until_ms is None else all_final_at(pipeline, until_ms)
    # A session ending by the frontier may still grow (it is final once the frontier
    # passes the bucket a reading a gap after its last could fall in); one ending a gap
    # before the frontier is final.
    settle = pipeline.windows.size_ms if isinstance(pipeline.windows, SessionWindows) else 0
    shown: dict[tuple[str, int], tuple[bool, dict[str, Any], int]] = {}
    header_done = False
    # Room for numbers to grow as windows fill, so that later lines stay aligned.
    widths = [0, 20, 20, 5, *(max(len(name), FOLLOW_NUMBER_WIDTH) for name in columns)]
    while True:
        # Read before the windows: every window ending by it is final in what follows.
        progress = store.read_progress(pipeline.name)
        frontier = final_frontier(progress, pipeline.allowed_lateness_ms)
        changed: list[WindowResult] = []
        all_final = True
        for page in iter_pages(store, pipeline, keys, since, until_ms, DEFAULT_LIMIT):
            for result in page.results:
                all_final = all_final and result.final
                slot = (result.key, result.window.start_ms)
                seen = (result.final, result.values, result.window.end_ms)
                if shown.get(slot) != seen:
                    shown[slot] = seen
                    changed.append(result)
        if changed:
            if fmt == "json":
                for result in changed:
                    out.write(dumps(result_dict(result)) + "\n")
            elif fmt == "csv":
                lines = list(csv_lines(changed, columns))
                out.writelines(lines if not header_done else lines[1:])
            else:
                lines = table_lines(changed, columns, widths)
                out.write("\n".join(lines if not header_done else lines[2:]) + "\n")
            header_done = True
            out.flush()
        if frontier is not None:
            # Windows ending at or before the frontier (sessions: a gap before it) are
            # final and were shown as such.
            since = max(since, min(frontier - settle, 10**13))
            # Forget only what the range has left behind: a window that became final
            # after the frontier was read is still in range, and must not print again.
            shown = {slot: seen for slot, seen in shown.items() if seen[2] > since}
        if done_at is not None and frontier is not None and frontier >= done_at and all_final:
            return 0
        if stop.wait(interval_s):
            return 0


def all_final_at(pipeline: Pipeline[Any], until_ms: int) -> int:
    """The final frontier from which no window starting before ``until_ms`` can change
    or appear: the end of the last window (session bucket) starting before it."""
    step = window_step_ms(pipeline)
    last_start = max(0, until_ms - 1) - max(0, until_ms - 1) % step
    return last_start + pipeline.windows.size_ms


def check_top_arguments(pipeline: Pipeline[Any], args: argparse.Namespace) -> None:
    """Refuse a bad ``--by`` or ``--k`` before anything is read (QueryError)."""
    check_rankable(pipeline, args.by, args.k)


def run_top(
    args: argparse.Namespace, store: Any, pipeline: Pipeline[Any], out: TextIO | None = None
) -> int:
    out = sys.stdout if out is None else out
    ranked = top_keys(store, pipeline, args.by, args.k, args.window)
    if ranked is None:
        where = "any window"
        if args.window is not None:
            where = f"the window containing {format_iso8601(args.window)}"
        print(f"shardflow top: {pipeline.name} has no data in {where}", file=sys.stderr)
        if args.format == "json":
            print("null", file=out)
        return 0
    print(render_top(ranked, args.format), file=out)
    return 0


def render_top(ranked: TopKeys, fmt: str) -> str:
    if fmt == "json":
        return dumps(top_dict(ranked), indent=True)
    if fmt == "csv":
        lines = ["rank,key,value"]
        lines.extend(
            _csv_row(rank, key, value) for rank, (key, value) in enumerate(ranked.top, start=1)
        )
        return "\n".join(lines)
    start, end = format_iso8601(ranked.window.start_ms), format_iso8601(ranked.window.end_ms)
    title = (
        f"{ranked.pipeline}: top {len(ranked.top)} of {ranked.keys:,} keys by "
        f"{ranked.aggregate}, window {start} to {end} ({'final' if ranked.final else 'open'})"
    )
    rows = [(str(n), key, _number(value)) for n, (key, value) in enumerate(ranked.top, start=1)]
    header = ("rank", "key", ranked.aggregate)
    widths = [max([len(header[i]), *(len(row[i]) for row in rows)]) for i in range(3)]

    def line(cells: tuple[str, str, str]) -> str:
        rank, key, value = cells
        return f"{rank.rjust(widths[0])}  {key.ljust(widths[1])}  {value.rjust(widths[2])}".rstrip()

    out = [title, "", line(header), line(("-" * widths[0], "-" * widths[1], "-" * widths[2]))]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}"


def _csv_row(rank: int, key: str, value: float) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([rank, key, value])
    return buffer.getvalue()
