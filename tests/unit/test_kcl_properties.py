"""What the KCL runner hands the daemon: records decoded at the embedded runner's
positions, the multilang properties, the daemon's command line, and the `run` options."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from processors.windowing.records import Position
from processors.windowing.redrive_envelope import wrap
from shardflow.cli import main
from shardflow.settings import Settings
from streams.kcl_launcher import daemon_command
from streams.kcl_properties import (
    KclOptions,
    application_name,
    build_properties,
    cbor_disabled,
    logback_xml,
    render_properties,
    settings_from_json,
    settings_to_json,
)
from streams.kcl_protocol import kcl_records
from streams.kpl import AggregateBuilder, UserRecord


def raw(sequence: int, data: bytes, sub: int = 0, key: str = "k") -> dict[str, object]:
    return {
        "action": "record",
        "data": base64.b64encode(data).decode(),
        "partitionKey": key,
        "sequenceNumber": str(sequence),
        "subSequenceNumber": sub,
        "approximateArrivalTimestamp": 1_795_000_000_123,
    }


def test_records_keep_the_positions_the_embedded_runner_gives_them() -> None:
    builder = AggregateBuilder(100_000)
    for i in range(3):
        builder.add(UserRecord(f"p{i}", None, f"u{i}".encode()))
    whole = builder.build()  # an aggregate the KCL passed on whole
    records = kcl_records(
        "s0",
        [
            raw(10, b"plain"),
            raw(11, b"user-0", sub=0),  # deaggregated by the KCL: the index is the sub
            raw(11, b"user-1", sub=1),
            raw(12, whole),
            raw(13, wrap("page-views", "id-1", b"original"), sub=2),
        ],
    )
    assert [r.position for r in records] == [
        Position(10),
        Position(11, 0),
        Position(11, 1),
        Position(12, 0),
        Position(12, 1),
        Position(12, 2),
        Position(13, 2),
    ]
    assert [r.data for r in records[3:6]] == [b"u0", b"u1", b"u2"]
    assert [r.partition_key for r in records[3:6]] == ["p0", "p1", "p2"]
    redriven = records[-1]
    assert (redriven.data, redriven.only_for, redriven.redrive_id) == (
        b"original",
        "page-views",
        "id-1",
    )
    assert records[0].arrival_ms == 1_795_000_000_123


def test_properties_for_an_emulator() -> None:
    settings = Settings(
        stream="clicks",
        table="aggs",
        endpoint_url="http://127.0.0.1:4566",
        service_endpoints={"kinesis": "http://127.0.0.1:4568"},
    )
    props = build_properties(settings, KclOptions(), ["page-views"], "/w/p.processor", "us-east-1")
    assert props["applicationName"] == "shardflow-clicks-aggs-page-views"
    assert props["streamName"] == "clicks" and props["regionName"] == "us-east-1"
    assert props["kinesisEndpoint"] == "http://127.0.0.1:4568"
    assert props["dynamoDBEndpoint"] == "http://127.0.0.1:4566"
    assert props["metricsLevel"] == "NONE"  # no CloudWatch endpoint property exists
    assert props["retrievalMode"] == "POLLING"
    assert props["callProcessRecordsEvenForEmptyRecordList"] == "true"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert cbor_disabled(settings)
    text = render_properties(props)
    assert "executableName = /w/p.processor\n" in text


def test_properties_for_real_aws_and_overrides() -> None:
    settings = Settings(stream="clicks")
    options = KclOptions(
        application_name="mine", worker_id="w1", overrides={"failoverTimeMillis": "3000"}
    )
    props = build_properties(settings, options, ["a", "b"], "/w/p", None)
    assert "kinesisEndpoint" not in props and "regionName" not in props
    assert props["metricsLevel"] == "SUMMARY" and not cbor_disabled(settings)
    assert (props["applicationName"], props["workerId"]) == ("mine", "w1")
    assert props["failoverTimeMillis"] == "3000"


def test_names_the_daemon_cannot_take_are_refused_or_cleaned() -> None:
    with pytest.raises(ValueError, match="spaces"):
        build_properties(Settings(), KclOptions(), ["p"], "/my dir/p", None)
    with pytest.raises(ValueError, match="lines"):
        render_properties({"k": "a\nb"})
    name = application_name(Settings(stream="a b", table="t" * 300), ["x/y"])
    assert " " not in name and "/" not in name and len(name) <= 200


def test_settings_round_trip_for_the_processor() -> None:
    settings = Settings(
        stream="s",
        table="t",
        region="eu-west-1",
        endpoint_url="http://e",
        service_endpoints={"kinesis": "http://k"},
        chosen=frozenset({"table"}),
    )
    assert settings_from_json(settings_to_json(settings)) == settings


def test_the_daemon_command() -> None:
    command = daemon_command(
        "java", Path("/j"), Path("/w/a.properties"), Path("/w/a.logback.xml"), True
    )
    assert command == [
        "java",
        "-Daws.cborEnabled=false",
        "-cp",
        "/j/*:/w",
        "software.amazon.kinesis.multilang.MultiLangDaemon",
        "--properties-file",
        "/w/a.properties",
        "--log-configuration",
        "/w/a.logback.xml",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--runner", "kcl", "--until-idle", "2"], "--until-idle is for the embedded"),
        (["run", "--kcl-property", "a=b"], "go with --runner kcl"),
        (["run", "--runner", "kcl", "--kcl-property", "novalue"], "KEY=VALUE"),
        (["run", "--runner", "kcl", "--kcl-property", "streamName=other"], "use --stream"),
        (
            ["run", "--runner", "kcl", "--kcl-property", "applicationName=a"],
            "use --kcl-application",
        ),
        (
            ["run", "--runner", "kcl", "--kcl-property", "kinesisEndpoint=http://x"],
            "AWS_ENDPOINT_URL_KINESIS",
        ),
    ],
)
def test_run_option_mistakes_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_without_java_says_so_before_touching_aws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An endpoint nothing listens on: reaching AWS first would fail with another message.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["run", "--runner", "kcl"]) == 2
    err = capsys.readouterr().err
    assert "needs Java" in err
    assert "not on PATH" in err


def test_logback_quiets_the_migration_state_stack_trace() -> None:
    assert 'name="software.amazon.kinesis.coordinator.migration.MigrationState" level="WARN"' in (
        logback_xml(verbose=False)
    )


AWKWARD = {
    "executableName": "/home/jos\u00e9/kcl/p.processor",  # the daemon reads ISO-8859-1
    "a key=with:separators #and !marks": "v",
    "#startsLikeAComment": "v",
    "leadingSpace": "  kept",
    "back\\slash": "C:\\dir\\x",
    "astral": "\U0001f600 and \t tab",
    "url": "http://127.0.0.1:4566/#x=1",
}


def test_properties_read_back_as_written_by_the_daemon_s_rules() -> None:
    text = render_properties(AWKWARD)
    assert text.isascii()
    assert "executableName = /home/jos\\u00e9/kcl/p.processor\n" in text
    assert "a\\ key\\=with\\:separators\\ \\#and\\ \\!marks = v\n" in text
    assert "\\#startsLikeAComment = v\n" in text
    assert "leadingSpace = \\  kept\n" in text
    assert "url = http://127.0.0.1:4566/#x=1\n" in text


JAVA_READER = """
import java.io.FileInputStream;
import java.util.Properties;
public class ReadProps {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) { p.load(in); }
        for (String k : p.stringPropertyNames()) {
            StringBuilder out = new StringBuilder();
            for (char c : (k + "\\u0000" + p.getProperty(k)).toCharArray()) {
                out.append(String.format("%04x", (int) c));
            }
            System.out.println(out);
        }
    }
}
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java")
def test_java_properties_load_reads_every_property_back(tmp_path: Path) -> None:
    """What the MultiLangDaemon does with the file (Properties.load of an InputStream)."""
    source = tmp_path / "ReadProps.java"
    source.write_text(JAVA_READER)
    props_file = tmp_path / "p.properties"
    props_file.write_text(render_properties(AWKWARD), encoding="utf-8")  # as the launcher
    out = subprocess.run(
        ["java", str(source), str(props_file)], capture_output=True, text=True, check=True
    ).stdout
    read = {}
    for line in out.split():
        key, _, value = bytes.fromhex(line).decode("utf-16-be").partition("\0")
        read[key] = value
    assert read == AWKWARD
