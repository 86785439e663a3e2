"""What the KCL runner writes before it starts the daemon: the multilang properties, the
logback configuration, and the record processor's own configuration (JSON).

Property names are the MultiLangDaemon's (``MultiLangDaemonConfiguration`` setters, KCL
3.1): ``kinesisEndpoint`` and ``dynamoDBEndpoint`` point the KCL's clients at emulators
(there is no CloudWatch endpoint property, so metrics are off on emulators),
``retrievalMode = POLLING`` (emulators have no enhanced fan-out), and
``callProcessRecordsEvenForEmptyRecordList`` delivers empty batches so quiet shards still
flush, checkpoint and are marked idle.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardflow.settings import Settings

MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"

_TABLE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_APPLICATION_NAME = 200
"""The KCL names three DynamoDB tables after the application (the longest suffix is
``-WorkerMetricStats``); table names hold at most 255 characters."""


@dataclass(frozen=True)
class KclOptions:
    """How the KCL runner runs the daemon. ``overrides`` (``--kcl-property KEY=VALUE``)
    replace or add properties last."""

    application_name: str | None = None
    properties_path: str | None = None
    worker_id: str | None = None
    failover_ms: int = 10_000
    idle_between_reads_ms: int = 1_000
    max_records: int = 10_000
    shutdown_grace_ms: int = 30_000
    java: str = "java"
    overrides: Mapping[str, str] = field(default_factory=dict)


OWNED_PROPERTIES: Mapping[str, str] = {
    "streamName": "use --stream",
    "applicationName": "use --kcl-application",
    "executableName": "shardflow's record processor is the executable",
    "processingLanguage": "set from the Python that runs shardflow",
    "kinesisEndpoint": "set AWS_ENDPOINT_URL_KINESIS (or AWS_ENDPOINT_URL, --endpoint-url)",
    "dynamoDBEndpoint": "set AWS_ENDPOINT_URL_DYNAMODB (or AWS_ENDPOINT_URL, --endpoint-url)",
    "regionName": "use --region or AWS_REGION",
    "streamArn": "use --stream",
}
"""Properties whose value the record processors must share with the daemon: set through
shardflow's own options, never ``--kcl-property`` (a daemon reading another stream than
the one its processors record would apply that stream's records under the wrong name)."""


def owned_property_error(key: str) -> str | None:
    """Why ``--kcl-property KEY=...`` is refused, or None when it may be set."""
    reason = OWNED_PROPERTIES.get(key)
    if reason is None:
        return None
    return f"--kcl-property {key} is set by shardflow itself: {reason}"


_NUMBERS = {
    "failoverTimeMillis": "failover_ms",
    "shutdownGraceMillis": "shutdown_grace_ms",
    "idleTimeBetweenReadsInMillis": "idle_between_reads_ms",
    "maxRecords": "max_records",
}
"""Properties the launcher and the processors follow too (the stop deadline, the fencing
grace): taken into :class:`KclOptions`, so they agree with what the daemon is told."""


def check_application_name(name: str) -> str:
    """The KCL names DynamoDB tables after the application: their characters only."""
    if not 3 <= len(name) <= MAX_APPLICATION_NAME or _TABLE_CHARS.search(name):
        raise ValueError(
            f"KCL application {name!r}: it names DynamoDB tables, so 3 to "
            f"{MAX_APPLICATION_NAME} characters of A-Z, a-z, 0-9, '_', '-' and '.'"
        )
    return name


def kcl_options(
    application: str | None, properties_path: str | None, overrides: Mapping[str, str]
) -> KclOptions:
    """The options of ``run --runner kcl``; ``overrides`` are its ``--kcl-property``
    pairs. Raises ValueError, with the option to fix, for what the daemon cannot take."""
    fields: dict[str, Any] = {}
    rest: dict[str, str] = {}
    for key, value in overrides.items():
        refused = owned_property_error(key)
        if refused:
            raise ValueError(refused)
        if key in _NUMBERS:
            if not value.isdigit() or int(value) <= 0:
                raise ValueError(f"--kcl-property {key}: wants a positive integer, got {value!r}")
            fields[_NUMBERS[key]] = int(value)
        elif key == "workerId":
            fields["worker_id"] = value
        else:
            rest[key] = value
    if application is not None:
        check_application_name(application)
    return KclOptions(
        application_name=application,
        properties_path=properties_path,
        overrides=rest,
        **fields,
    )


def application_name(settings: Settings, pipelines: Sequence[str]) -> str:
    """The default KCL application (and lease table) name: one per stream, results table
    and set of pipelines, since the lease table's checkpoints are only valid for the
    results they were made with."""
    raw = f"shardflow-{settings.stream}-{settings.table}-{'_'.join(sorted(pipelines))}"
    name = _TABLE_CHARS.sub("_", raw)
    return name[:MAX_APPLICATION_NAME]


def build_properties(
    settings: Settings,
    options: KclOptions,
    pipelines: Sequence[str],
    executable: str,
    region: str | None,
) -> dict[str, str]:
    """The daemon's properties, in the order they are written."""
    if any(c.isspace() for c in executable):
        raise ValueError(
            f"the daemon splits executableName on spaces; {executable!r} has some: "
            "use a --kcl-properties path without spaces"
        )
    props: dict[str, str] = {
        "executableName": executable,
        "processingLanguage": f"python/{sys.version_info.major}.{sys.version_info.minor}",
        "applicationName": options.application_name or application_name(settings, pipelines),
        "streamName": settings.stream,
        "AwsCredentialsProvider": "DefaultCredentialsProvider",
        "initialPositionInStream": "TRIM_HORIZON",
        "retrievalMode": "POLLING",
        "callProcessRecordsEvenForEmptyRecordList": "true",
        "idleTimeBetweenReadsInMillis": str(options.idle_between_reads_ms),
        "maxRecords": str(options.max_records),
        "failoverTimeMillis": str(options.failover_ms),
        "shutdownGraceMillis": str(options.shutdown_grace_ms),
    }
    if region:
        props["regionName"] = region
    if options.worker_id:
        props["workerId"] = options.worker_id
    kinesis = settings.endpoint_for("kinesis")
    dynamodb = settings.endpoint_for("dynamodb")
    if kinesis:
        props["kinesisEndpoint"] = kinesis
    if dynamodb:
        props["dynamoDBEndpoint"] = dynamodb
    # CloudWatch has no endpoint property: on emulators the metrics would go to real AWS.
    props["metricsLevel"] = "NONE" if settings.uses_emulator else "SUMMARY"
    props.update(options.overrides)
    return props


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\f": "\\f"}
_KEY_ESCAPES = {**_ESCAPES, " ": "\\ ", "=": "\\=", ":": "\\:", "#": "\\#", "!": "\\!"}


def _escape(text: str, key: bool) -> str:
    """``text`` as ``java.util.Properties.load`` reads it back unchanged: the daemon reads
    the file as ISO-8859-1, so anything outside printable ASCII is a ``\\uXXXX`` escape;
    a key's separators, spaces and comment marks are escaped (else the key would end
    early, or the line be a comment), and so is a value's leading space (else dropped)."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"a property cannot span lines: {text!r}")
    escapes = _KEY_ESCAPES if key else _ESCAPES
    out: list[str] = []
    for i, char in enumerate(text):
        if char in escapes:
            out.append(escapes[char])
        elif char == " " and i == 0:
            out.append("\\ ")
        elif " " <= char <= "~":
            out.append(char)
        else:
            encoded = char.encode("utf-16-be")  # two units for a character past U+FFFF
            out += [f"\\u{encoded[j]:02x}{encoded[j + 1]:02x}" for j in range(0, len(encoded), 2)]
    return "".join(out)


def render_properties(props: Mapping[str, str]) -> str:
    lines = ["# Written by `shardflow run --runner kcl`; rewritten on every start."]
    lines += [f"{_escape(key, True)} = {_escape(value, False)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def cbor_disabled(settings: Settings) -> bool:
    """The Java SDK speaks CBOR to Kinesis by default; moto does not, and JSON is what the
    emulators are tested with. Real AWS keeps CBOR."""
    return settings.endpoint_for("kinesis") is not None


def logback_xml(verbose: bool) -> str:
    """The daemon's logging, to stderr: without ``verbose`` the per-batch lines of the
    multilang classes are left out (child stderr and errors still show)."""
    quiet = (
        ""
        if verbose
        else "".join(
            f'  <logger name="software.amazon.kinesis.{name}" level="WARN"/>\n'
            for name in (
                "multilang.MessageWriter",
                "multilang.MultiLangProtocol",
                "multilang.LineReaderTask",
                "coordinator.DiagnosticEventLogger",
                "coordinator.Scheduler",
                "coordinator.assignment.LeaseAssignmentManager",
                "coordinator.assignment.VarianceBasedLeaseAssignmentDecider",
                "leader.DynamoDBLockBasedLeaderDecider",
                "leases.LeaseCleanupManager",
                "leases.dynamodb.DynamoDBLeaseDiscoverer",
                # Logs a Java stack trace ("caller at ...") at INFO on a first start.
                "coordinator.migration.MigrationState",
            )
        )
    )
    return (
        "<configuration>\n"
        '  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">\n'
        "    <target>System.err</target>\n"
        "    <encoder><pattern>%d [%thread] %-5level %logger{36} "
        "[%mdc{ShardId:-NONE}] - %msg %n</pattern></encoder>\n"
        "  </appender>\n"
        f"{quiet}"
        # It prints each line a processor writes to stderr itself, and logs it again.
        '  <logger name="software.amazon.kinesis.multilang.DrainChildSTDERRTask" level="OFF"/>\n'
        '  <root level="INFO"><appender-ref ref="STDERR"/></root>\n'
        "</configuration>\n"
    )


def settings_to_json(settings: Settings) -> dict[str, Any]:
    """The settings a record processor needs (no credentials: those come from the
    environment, which the daemon passes on to its children)."""
    return {
        "stream": settings.stream,
        "table": settings.table,
        "dead_letter_queue": settings.dead_letter_queue,
        "alert_topic": settings.alert_topic,
        "region": settings.region,
        "endpoint_url": settings.endpoint_url,
        "service_endpoints": dict(settings.service_endpoints),
        "chosen": sorted(settings.chosen),
    }


def settings_from_json(data: Mapping[str, Any]) -> Settings:
    return Settings(
        stream=data["stream"],
        table=data["table"],
        dead_letter_queue=data["dead_letter_queue"],
        alert_topic=data["alert_topic"],
        region=data.get("region"),
        endpoint_url=data.get("endpoint_url"),
        service_endpoints=dict(data.get("service_endpoints") or {}),
        chosen=frozenset(data.get("chosen") or ()),
    )
