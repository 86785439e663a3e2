"""The command line: argument handling, exit codes and messages (design.md sections 8 and 9).

Nothing here talks to AWS: commands that would build clients either fail before that, or
get a fake Kinesis client through ``shardflow.cli.make_clients``.
"""

from __future__ import annotations

import io
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from processors.pipelines import PIPELINES
from shardflow import cli
from shardflow.cli import build_parser, main
from shardflow.cli_parser import parse_time
from streams.kpl import decode_aggregate

T0_TEXT = "2026-11-27T10:00:00Z"
T0 = int(datetime(2026, 11, 27, 10, 0, tzinfo=UTC).timestamp() * 1000)


class FakeKinesis:
    """One shard; keeps what it was sent, in order."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        whole = {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)}
        return {"Shards": [{"ShardId": "shardId-000000000000", "HashKeyRange": whole}]}

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries.extend(Records)
        return {
            "FailedRecordCount": 0,
            "Records": [{"ShardId": "shardId-000000000000", "SequenceNumber": "1"}] * len(Records),
        }


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should anything build a client by mistake, it talks to a closed local port."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("SHARDFLOW_STREAM", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client_builds(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records each ``make_clients`` call and hands out a fake Kinesis client."""
    built: list[Any] = []

    def fake_make_clients(settings: Any) -> Any:
        clients = SimpleNamespace(settings=settings, kinesis=FakeKinesis())
        built.append(clients)
        return clients

    monkeypatch.setattr(cli, "make_clients", fake_make_clients)
    return built


def exit_code(argv: list[str]) -> int:
    """The exit code of ``main(argv)``, whether it returns or argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def event(n: int, page: str = "/home", ts: int = T0, **extra: Any) -> bytes:
    return orjson.dumps({"event_id": f"e{n}", "ts": ts, "user_id": f"u{n}", "page": page, **extra})


# --- parse_time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1764237600000", 1764237600000),
        ("0", 0),
        (T0_TEXT, T0),
        ("2026-11-27T10:00:00z", T0),
        ("2026-11-27T10:00:00.250Z", T0 + 250),
        ("2026-11-27T11:00:00+01:00", T0),
        (f" {T0} ", T0),
    ],
)
def test_parse_time_accepts_epoch_ms_and_iso8601(text: str, expected: int) -> None:
    assert parse_time(text) == expected


def test_since_and_until_are_parsed_to_epoch_ms() -> None:
    args = build_parser().parse_args(
        ["query", "page-views", "--since", T0_TEXT, "--until", str(T0 + 60_000)]
    )
    assert (args.since, args.until) == (T0, T0 + 60_000)
    assert args.format == "table"
    assert args.key is None


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "2026-11-27T10:00:00",  # no time zone
        "2026-13-01T00:00:00Z",
        "1764237600000ms",
        "",
    ],
)
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_bad_times_exit_2_mentioning_iso8601(
    bad: str, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "page-views", f"{option}={bad}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err
    assert "ISO-8601" in err
    assert "Traceback" not in err


def test_digit_like_time_that_int_rejects_still_mentions_iso8601(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``parse_time`` checks ``str.isdigit()``, which is true for "²", then ``int("²")``
    raises ValueError, so argparse prints "invalid parse_time value" with no hint."""
    with pytest.raises(SystemExit) as exc:
        main(["query", "page-views", "--since=²"])
    assert exc.value.code == 2
    assert "ISO-8601" in capsys.readouterr().err


# --- query ---------------------------------------------------------------------------------


def test_query_unknown_pipeline_exits_2_listing_known_ones_without_aws(
    client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", "no-such-pipeline"]) == 2
    err = capsys.readouterr().err
    assert "no-such-pipeline" in err
    assert "known pipelines" in err
    for name in PIPELINES:
        assert name in err
    assert client_builds == []


@pytest.mark.parametrize(
    "argv",
    [
        ["query"],
        ["query", "page-views", "--format", "xml"],
        ["query", "page-views", "--bogus"],
        ["no-such-command"],
        [],
    ],
)
def test_malformed_command_lines_exit_2(
    argv: list[str], client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(argv) == 2
    assert "usage:" in capsys.readouterr().err
    assert client_builds == []


# --- produce -------------------------------------------------------------------------------


def test_produce_needs_a_file_or_synthetic(
    client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["produce"]) == 2
    err = capsys.readouterr().err
    assert "FILE" in err
    assert "--synthetic" in err
    assert client_builds == []


def test_produce_refuses_both_a_file_and_synthetic(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\n")
    assert main(["produce", str(path), "--synthetic", "5"]) == 2
    assert "--synthetic" in capsys.readouterr().err
    assert client_builds == []


@pytest.mark.parametrize("rate", ["-5", "0", "-0.5", "fast"])
def test_produce_rejects_a_rate_that_is_not_positive(
    rate: str, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["produce", "--synthetic", "5", "--rate", rate])
    assert exc.value.code == 2
    assert "--rate" in capsys.readouterr().err
    assert client_builds == []


@pytest.mark.parametrize("rate", ["nan", "inf"])
def test_produce_rejects_a_rate_that_is_not_a_finite_number(
    rate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``positive_float`` lets NaN and infinity through; the producer then crashes on
    ``int(rate / 10)`` (ValueError / OverflowError) with a traceback."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["produce", "--synthetic", "5", "--rate", rate])
    assert exc.value.code == 2
    assert "--rate" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["produce", "--synthetic", "0"],
        ["produce", "--synthetic", "-3"],
        ["produce", "--synthetic", "many"],
        ["up", "--shards", "0"],
        ["run", "--until-idle", "-1"],
        ["run", "--flush-interval", "0"],
    ],
)
def test_non_positive_counts_and_durations_exit_2(
    argv: list[str], client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert client_builds == []


def test_produce_file_sends_every_line_and_prints_a_summary(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\r\n\n" + b"{not json\n" + event(2) + b"\n")

    assert main(["--stream", "my-stream", "produce", str(path)]) == 0

    (clients,) = client_builds
    assert clients.settings.stream == "my-stream"
    entries = clients.kinesis.entries
    assert [e["Data"] for e in entries] == [event(1), b"{not json", event(2)]
    assert entries[0]["PartitionKey"] == "e1"
    assert entries[2]["PartitionKey"] == "e2"
    out = capsys.readouterr().out
    assert "events read       3" in out
    assert "events sent       3" in out
    assert "PUT payload units 3" in out


def test_produce_partition_key_option(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1, page="/cart") + b"\n")
    assert main(["produce", str(path), "--partition-key", "page"]) == 0
    assert client_builds[0].kinesis.entries[0]["PartitionKey"] == "/cart"


def test_produce_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(event(1) + b"\n")))
    assert main(["produce", "-"]) == 0
    assert [e["Data"] for e in client_builds[0].kinesis.entries] == [event(1)]


def test_produce_synthetic(client_builds: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce", "--synthetic", "25", "--rate", "1000000"]) == 0
    entries = client_builds[0].kinesis.entries
    assert len(entries) == 25
    assert len({e["PartitionKey"] for e in entries}) == 25
    assert "events sent       25" in capsys.readouterr().out


def test_produce_reports_records_it_could_not_send_and_exits_1(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    oversize = event(2, padding="x" * (1024 * 1024))
    path.write_bytes(event(1) + b"\n" + oversize + b"\n" + event(3) + b"\n")

    failures = tmp_path / "failed.jsonl"
    assert main(["produce", str(path), "--failures", str(failures)]) == 1

    assert [e["PartitionKey"] for e in client_builds[0].kinesis.entries] == ["e1", "e3"]
    captured = capsys.readouterr()
    assert "events sent       2" in captured.out
    assert "failed            1" in captured.out
    assert "line 2: not sent:" in captured.err
    assert "limit" in captured.err
    assert str(failures) in captured.err
    # The failure file holds the event itself, with its line and the reason.
    (failed,) = [orjson.loads(line) for line in failures.read_bytes().splitlines()]
    assert failed["line"] == 2 and "limit" in failed["reason"]
    assert failed["data"].encode() == oversize


def test_produce_aggregate_packs_events_into_kpl_records(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(event(n) + b"\n" for n in range(1, 51)))
    assert main(["produce", str(path), "--aggregate"]) == 0
    (record,) = client_builds[0].kinesis.entries  # one shard: one aggregate
    users = decode_aggregate(record["Data"])
    assert users is not None and [u.data for u in users] == [event(n) for n in range(1, 51)]
    out = capsys.readouterr().out
    assert "Kinesis records   1 (50.0 events each)" in out
    assert "events sent       50" in out


def test_produce_missing_file_exits_1_with_a_clear_message(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["produce", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "shardflow produce:" in err
    assert str(missing) in err
    assert "Traceback" not in err


# --- replay --------------------------------------------------------------------------------


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    lines = [
        event(1, "/home", T0 + 1_000, latency_ms=40, value=10.0),
        event(2, "/home", T0 + 2_000, latency_ms=120),
        b"",
        event(3, "/cart", T0 + 3_000, latency_ms=80, value=2.5),
        b"{broken json",
        event(4, "/home", T0 + 61_000, latency_ms=10),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return path


def test_replay_prints_json_in_the_documented_shape(
    events_file: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "page-views", str(events_file), "--format", "json"]) == 0

    captured = capsys.readouterr()
    results = json.loads(captured.out)
    columns = PIPELINES["page-views"].aggregate_names
    fixed = ["pipeline", "key", "window_start", "window_end", "final"]
    for item in results:
        assert list(item) == [*fixed, *columns]
        assert item["pipeline"] == "page-views"
        assert item["final"] is True
    by_window = {(r["key"], r["window_start"]): r for r in results}
    assert set(by_window) == {
        ("/cart", "2026-11-27T10:00:00Z"),
        ("/home", "2026-11-27T10:00:00Z"),
        ("/home", "2026-11-27T10:01:00Z"),
    }
    home = by_window["/home", "2026-11-27T10:00:00Z"]
    assert home["window_end"] == "2026-11-27T10:01:00Z"
    assert home["views"] == 2
    assert home["revenue"] == pytest.approx(10.0)
    assert home["latency_min"] == 40
    assert home["latency_max"] == 120
    # p99 of [40, 120]: rank floor(0.99 * 1) = 0, 40 to the sketch's 1%; users u1 and u2
    assert home["latency_p99"] == pytest.approx(40, rel=0.01)
    assert type(home["latency_p99"]) is float
    assert home["unique_users"] == 2
    assert type(home["unique_users"]) is int
    cart = by_window["/cart", "2026-11-27T10:00:00Z"]
    assert cart["views"] == 1
    assert (cart["latency_p99"], cart["unique_users"]) == (pytest.approx(80, rel=0.01), 1)
    later = by_window["/home", "2026-11-27T10:01:00Z"]
    assert later["views"] == 1
    assert (later["latency_p99"], later["unique_users"]) == (pytest.approx(10, rel=0.01), 1)
    assert "replayed 5 lines: 1 invalid, 0 late" in captured.err
    assert client_builds == []


def test_replay_table_and_csv(
    events_file: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "page-views", str(events_file)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[:4] == ["key", "window_start", "window_end", "final"]
    assert header[-2:] == ["latency_p99", "unique_users"]
    assert len(table.splitlines()) == 2 + 3
    cart = next(line.split() for line in table.splitlines() if line.startswith("/cart"))
    # the p99 (80 within 1%) with two decimals, the user count as an integer
    assert 79.2 <= float(cart[-2]) <= 80.8 and re.fullmatch(r"\d+\.\d\d", cart[-2])
    assert cart[-1] == "1"

    assert main(["replay", "page-views", str(events_file), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0].startswith("pipeline,key,window_start,window_end,final")
    assert rows[0].endswith(",latency_min,latency_max,latency_p99,unique_users")
    assert len(rows) == 1 + 3


def test_replay_of_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert main(["replay", "page-views", str(path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "replayed 0 lines" in captured.err


def test_replay_missing_file_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["replay", "page-views", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("shardflow replay:")
    assert "No such file" in captured.err
    assert str(missing) in captured.err
    assert "Traceback" not in captured.err


def test_replay_unknown_pipeline_exits_2(
    events_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "nope", str(events_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown pipeline 'nope'" in err
    assert "page-views" in err


def test_replay_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["replay", "page-views"]) == 2
    assert "usage:" in capsys.readouterr().err


# --- emulator and endpoints ----------------------------------------------------------------


def test_emulator_errors_exit_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """moto missing or a busy port: one line and exit 1, as for every other command."""

    def unavailable(host: str, port: int, exit_with_parent: bool = False) -> int:
        raise cli.emulator_module.EmulatorUnavailable(
            f"port {port} on {host} is in use: is LocalStack or another emulator running?"
            " use --port"
        )

    monkeypatch.setattr(cli.emulator_module, "run_foreground", unavailable)
    assert main(["emulator", "--port", "4566"]) == 1
    assert capsys.readouterr().err == (
        "shardflow emulator: port 4566 on 127.0.0.1 is in use: is LocalStack or another"
        " emulator running? use --port\n"
    )


def test_endpoint_url_option_wins_over_per_service_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client_builds: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4567")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4568")
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\n")

    assert main(["--endpoint-url", "http://127.0.0.1:4600", "produce", str(path)]) == 0

    settings = client_builds[0].settings
    for service in ("kinesis", "dynamodb", "sqs", "sns"):
        assert settings.endpoint_for(service) == "http://127.0.0.1:4600"


def test_per_service_environment_applies_without_endpoint_url(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    client_builds: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4567")
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\n")

    assert main(["produce", str(path)]) == 0

    settings = client_builds[0].settings
    assert settings.endpoint_for("kinesis") == "http://127.0.0.1:4567"
    assert settings.endpoint_for("sqs") == "http://127.0.0.1:9"  # AWS_ENDPOINT_URL


def test_produce_refuses_a_failure_file_it_could_not_write_before_sending(
    tmp_path: Path, client_builds: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\n")
    nowhere = tmp_path / "missing-dir" / "failed.jsonl"
    assert main(["produce", str(path), "--failures", str(nowhere)]) == 2
    assert "cannot write the failure file" in capsys.readouterr().err
    assert client_builds == []


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_the_command_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `shardflow query ... | head`: the reader leaves before the output is written.
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"event_id": "e1", "ts": 1000, "user_id": "u1", "page": "/home", "latency_ms": 5}\n'
    )
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["replay", "page-views", str(events)]) == 141
    assert "Broken pipe" not in capsys.readouterr().err
