"""``shardflow ingest``: the HTTP contract, with Starlette's TestClient and a fake producer."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from processors.pipelines import PIPELINES
from shardflow import cli, ingest
from shardflow.ingest import (
    Ingest,
    IngestOptions,
    Producer,
    ProducerPool,
    ProducerUnavailable,
    targets_for,
)
from shardflow.settings import Settings
from streams.aws_errors import ResourceMissing
from streams.producer_api import PutResult
from tests.unit.fake_producer import FakeProducer, ndjson, page_view

NDJSON = {"content-type": "application/x-ndjson"}


def make_ingest(
    producer: Producer,
    opened: list[str] | None = None,
    open_producer: Callable[[str], Producer] | None = None,
    **options: Any,
) -> Ingest:
    def default_open(stream: str) -> Producer:
        if opened is not None:
            opened.append(stream)
        return producer

    pool = ProducerPool(open_producer or default_open)
    return Ingest(targets_for(Settings(), PIPELINES), pool, IngestOptions(**options))


@pytest.fixture
def producer() -> Iterator[FakeProducer]:
    fake = FakeProducer()
    yield fake
    fake.close()


@pytest.fixture
def client(producer: FakeProducer) -> Iterator[TestClient]:
    with TestClient(make_ingest(producer).app) as http:
        yield http


def post(http: TestClient, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return http.post("/v1/events", content=body, headers=headers or {})


# -- what is accepted ---------------------------------------------------------------


def test_one_event_is_sent_compactly_keyed_by_event_id(
    client: TestClient, producer: FakeProducer
) -> None:
    event = page_view(1)
    response = post(client, orjson.dumps(event, option=orjson.OPT_INDENT_2))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1 and body["events"] == 1
    assert body["pipeline"] == "page-views" and body["stream"] == "clickstream"
    assert body["failed"] == body["not_sent"] == body["pending"] == []
    assert "error" not in body
    data, key, result = producer.stored[0]
    assert data == orjson.dumps(event) and key == "e1"
    assert body["results"] == [
        {
            "index": 0,
            "shard_id": result.shard_id,
            "sequence_number": result.sequence_number,
            "sub_sequence_number": 0,
        }
    ]


def test_an_array_is_sent_in_order_with_a_result_per_index(
    client: TestClient, producer: FakeProducer
) -> None:
    events = [page_view(n) for n in range(5)]
    response = post(client, b"  \n" + orjson.dumps(events), {"content-type": "application/json"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 5
    assert [entry["index"] for entry in body["results"]] == [0, 1, 2, 3, 4]
    assert [data for data, _ in producer.puts] == [orjson.dumps(e) for e in events]
    sequences = {result.sequence_number for _, _, result in producer.stored}
    assert {entry["sequence_number"] for entry in body["results"]} == sequences


@pytest.mark.parametrize(
    "content_type",
    ["application/x-ndjson", "application/jsonl", "application/json; charset=utf-8", None],
)
def test_json_lines_by_content_type_or_by_sniffing(
    client: TestClient, producer: FakeProducer, content_type: str | None
) -> None:
    body = ndjson(page_view(1), page_view(2)) + b"\n  \n" + orjson.dumps(page_view(3)) + b"\r\n"
    headers = {"content-type": content_type} if content_type else {}
    response = post(client, body, headers)

    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 3
    assert [key for _, key in producer.puts] == ["e1", "e2", "e3"]


def test_partition_key_field_is_configurable_with_a_hash_when_missing(
    producer: FakeProducer,
) -> None:
    with TestClient(make_ingest(producer, partition_key="user_id").app) as http:
        with_user, without = page_view(1), page_view(2, user_id=None)
        response = post(http, orjson.dumps([with_user, without]))

    assert response.status_code == 200, response.text
    assert producer.puts[0][1] == "u1"
    assert producer.puts[1][1] == hashlib.md5(orjson.dumps(without)).hexdigest()


def test_explicit_pipeline_goes_to_its_own_stream(producer: FakeProducer) -> None:
    opened: list[str] = []
    reading = {"device_id": "d1", "ts": 1_795_000_000_000, "battery_pct": 50}
    with TestClient(make_ingest(producer, opened).app) as http:
        response = http.post("/v1/pipelines/device-sessions/events", content=orjson.dumps(reading))
        views = http.post("/v1/pipelines/page-views/events", content=orjson.dumps(page_view(1)))

    assert response.status_code == 200, response.text
    assert views.status_code == 200
    assert response.json()["stream"] == "device-readings"
    assert opened == ["device-readings", "clickstream"]


def test_unknown_pipeline_is_404_listing_the_known_ones(
    client: TestClient, producer: FakeProducer
) -> None:
    response = client.post("/v1/pipelines/nope/events", content=orjson.dumps(page_view(1)))

    assert response.status_code == 404
    body = response.json()
    assert body["error"] == (
        "unknown pipeline 'nope'; known pipelines: device-sessions, page-views"
    )
    assert body["known_pipelines"] == ["device-sessions", "page-views"]
    assert producer.puts == []


def test_other_routes_and_methods_answer_in_json(client: TestClient) -> None:
    assert client.get("/v1/events").status_code == 405
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


# -- all or nothing -------------------------------------------------------------------


def test_any_invalid_event_sends_nothing_and_lists_each(
    client: TestClient, producer: FakeProducer
) -> None:
    events = [page_view(0), page_view(1, page=""), page_view(2), page_view(3, ts=None), 7]
    response = post(client, orjson.dumps(events))

    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0 and body["events"] == 5
    assert "nothing was sent" in body["error"]
    assert [entry["index"] for entry in body["invalid"]] == [1, 3, 4]
    assert "page" in body["invalid"][0]["error"]
    assert "ts" in body["invalid"][1]["error"]
    assert producer.puts == []


def test_invalid_json_lines_name_their_lines(client: TestClient, producer: FakeProducer) -> None:
    body = ndjson(page_view(0)) + b"\n" + ndjson(page_view(1, event_id=5))
    response = post(client, body, NDJSON)

    assert response.status_code == 400
    assert response.json()["invalid"] == [
        {"index": 1, "line": 3, "error": response.json()["invalid"][0]["error"]}
    ]
    assert "event_id" in response.json()["invalid"][0]["error"]
    assert producer.puts == []


def test_a_record_kinesis_could_never_take_is_invalid_too(
    client: TestClient, producer: FakeProducer
) -> None:
    huge = page_view(1, note="x" * (1024 * 1024))
    response = post(client, orjson.dumps([page_view(0), huge]))

    assert response.status_code == 400
    [entry] = response.json()["invalid"]
    assert entry["index"] == 1 and "1048576" in entry["error"]
    assert producer.puts == []


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        (b'{"event_id": "e1"}\n{"event_id": \n{"event_id": "e3"}\n', NDJSON, "line 2"),
        (b'{"event_id": "e1"}\n{"event_id": \n', {}, "line 2"),
        (b'[{"event_id": "e1"},', {}, "malformed JSON"),
        (b'{"event_id": "e1"', {}, "malformed JSON"),
        (b"\xff\xfe", {}, "malformed JSON"),
    ],
)
def test_malformed_json_is_400_and_sends_nothing(
    client: TestClient, producer: FakeProducer, body: bytes, headers: dict[str, str], words: str
) -> None:
    response = post(client, body, headers)

    assert response.status_code == 400
    assert words in response.json()["error"]
    assert producer.puts == []


@pytest.mark.parametrize("body", [b"", b"  \n\t", b"[]", b" [ ] ", b"\n\n"])
def test_empty_body_or_array_is_400(
    client: TestClient, producer: FakeProducer, body: bytes
) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert "empty" in response.json()["error"]
    assert post(client, body, NDJSON).status_code == 400
    assert producer.puts == []


@pytest.mark.parametrize("body", [b"42", b'"event"', b"null", b"true"])
def test_a_body_that_is_not_an_object_array_or_lines_is_400(
    client: TestClient, body: bytes
) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert "send one event" in response.json()["error"]


def test_other_content_types_are_415(client: TestClient, producer: FakeProducer) -> None:
    response = post(client, orjson.dumps(page_view(1)), {"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/x-ndjson" in response.json()["error"]
    assert producer.puts == []


def test_too_large_a_body_is_413(producer: FakeProducer) -> None:
    with TestClient(make_ingest(producer, max_body_bytes=1000).app) as http:
        events = orjson.dumps([page_view(n) for n in range(20)])
        declared = post(http, events)

        def chunks() -> Iterator[bytes]:  # no Content-Length: the size is counted
            yield events[:500]
            yield events[500:]

        streamed = http.post("/v1/events", content=chunks())
        fits = post(http, orjson.dumps([page_view(n) for n in range(3)]))

    assert declared.status_code == 413 and streamed.status_code == 413
    assert declared.json()["max_bytes"] == 1000
    assert f"is {len(events)} bytes" in declared.json()["error"], "refused before reading"
    assert fits.status_code == 200
    assert len(producer.puts) == 3


@pytest.mark.parametrize("json_lines", [False, True])
def test_too_many_events_is_413(producer: FakeProducer, json_lines: bool) -> None:
    events = [page_view(n) for n in range(4)]
    body = ndjson(*events) if json_lines else orjson.dumps(events)
    with TestClient(make_ingest(producer, max_events=3).app) as http:
        response = post(http, body, NDJSON if json_lines else {})
        fits = post(http, orjson.dumps(events[:3]))

    assert response.status_code == 413
    assert response.json()["max_events"] == 3
    assert fits.status_code == 200
    assert len(producer.puts) == 3


# -- the producer says no -------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (2.5, "3")])
def test_buffer_full_is_429_stating_what_was_sent_and_what_was_not(
    retry_after: float, header: str
) -> None:
    producer = FakeProducer(accept_at_most=2, retry_after=retry_after)
    with TestClient(make_ingest(producer).app) as http:
        response = post(http, orjson.dumps([page_view(n) for n in range(5)]))

    assert response.status_code == 429
    assert response.headers["retry-after"] == header
    body = response.json()
    assert body["accepted"] == 2
    assert [entry["index"] for entry in body["results"]] == [0, 1]
    assert body["not_sent"] == [2, 3, 4]
    assert body["failed"] == [] and body["pending"] == []
    assert "from index 2" in body["error"]
    assert [key for _, key, _ in producer.stored] == ["e0", "e1"]


def test_closed_producer_is_503_with_retry_after(producer: FakeProducer) -> None:
    producer.close()
    with TestClient(make_ingest(producer).app) as http:
        response = post(http, orjson.dumps([page_view(0), page_view(1)]))

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["not_sent"] == [0, 1]
    assert response.json()["accepted"] == 0


def test_a_producer_that_cannot_be_opened_is_503_with_the_reason(producer: FakeProducer) -> None:
    def missing(stream: str) -> Producer:
        raise ResourceMissing(f"stream {stream!r} not found: create it with `shardflow up`")

    with TestClient(make_ingest(producer, open_producer=missing).app) as http:
        response = post(http, orjson.dumps(page_view(0)))

    assert response.status_code == 503
    assert "shardflow up" in response.json()["error"]
    assert response.json()["not_sent"] == [0]


REASON = "ProvisionedThroughputExceededException past the deadline"


def test_a_failed_future_is_502_naming_the_event_and_the_reason() -> None:
    def fail_e1(data: bytes) -> str | None:
        return REASON if b'"e1"' in data else None

    producer = FakeProducer(fail=fail_e1)
    with TestClient(make_ingest(producer).app) as http:
        response = post(http, orjson.dumps([page_view(n) for n in range(3)]))
    producer.close()

    assert response.status_code == 502
    body = response.json()
    assert body["failed"] == [{"index": 1, "error": REASON}]
    assert [entry["index"] for entry in body["results"]] == [0, 2]
    assert body["accepted"] == 2


def test_kinesis_taking_nothing_is_503() -> None:
    producer = FakeProducer(fail=lambda data: "cannot reach the endpoint")
    with TestClient(make_ingest(producer).app) as http:
        response = post(http, orjson.dumps([page_view(0), page_view(1)]))
    producer.close()

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert [entry["index"] for entry in response.json()["failed"]] == [0, 1]


def test_no_answer_in_time_is_504_with_the_pending_indexes() -> None:
    producer = FakeProducer(hold=True)
    with TestClient(make_ingest(producer, wait_timeout=0.2).app) as http:
        response = post(http, orjson.dumps([page_view(0), page_view(1)]))

    assert response.status_code == 504
    assert response.json()["pending"] == [0, 1]
    assert "twice" in response.json()["error"]
    assert len(producer.stored) == 2, "closing the endpoint still delivered them"


# -- health and shutdown --------------------------------------------------------------


def test_health_reports_pipelines_counters_and_producer_stats(
    client: TestClient, producer: FakeProducer
) -> None:
    post(client, orjson.dumps([page_view(0), page_view(1)]))
    post(client, orjson.dumps([page_view(2, page="")]))
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["pipelines"] == {"page-views": "clickstream", "device-sessions": "device-readings"}
    assert body["counters"]["events_accepted"] == 2
    assert body["counters"]["events_invalid"] == 1
    assert body["producers"]["clickstream"]["sent"] == 2
    assert body["in_flight"] == 0


def test_shutting_down_refuses_new_events_and_closes_the_producer(
    producer: FakeProducer,
) -> None:
    ingest = make_ingest(producer)
    with TestClient(ingest.app) as http:
        assert post(http, orjson.dumps(page_view(0))).status_code == 200
        ingest.begin_shutdown()
        health = http.get("/health")
        refused = post(http, orjson.dumps(page_view(1)))
        assert producer.close_calls == 0

    assert health.status_code == 503 and health.json()["status"] == "shutting down"
    assert refused.status_code == 503 and "retry-after" in refused.headers
    assert [key for _, key in producer.puts] == ["e0"]
    assert producer.close_calls == 1 and producer.closed


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "make_clients", lambda settings: object())


@pytest.mark.parametrize(
    ("problem", "words"),
    [
        (ResourceMissing("stream 'clickstream' not found: create it with `shardflow up`"), "up`"),
        (ProducerUnavailable("the Kinesis producer library is missing: x"), "library is missing"),
    ],
)
def test_the_command_fails_in_one_line_when_no_producer_opens(
    no_aws: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    problem: Exception,
    words: str,
) -> None:
    def make_producer(clients: object, settings: Settings) -> Producer:
        raise problem

    monkeypatch.setattr(ingest, "make_producer", make_producer)
    assert cli.main(["ingest", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("shardflow ingest: ") and words in err
    assert len(err.strip().splitlines()) == 1


def test_the_command_reports_a_port_in_use(
    no_aws: None, producer: FakeProducer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    opened: list[str] = []

    def make_producer(clients: object, settings: Settings) -> Producer:
        opened.append(settings.stream)
        return producer

    monkeypatch.setattr(ingest, "make_producer", make_producer)
    taken = ingest.bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        assert cli.main(["ingest", "--port", str(port)]) == 1
    finally:
        taken.close()
    assert "Address already in use" in capsys.readouterr().err
    assert opened == [], "the port is checked before a producer is opened"


def test_the_command_rejects_an_unknown_pipeline(
    no_aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ingest", "--pipeline", "nope"]) == 2
    assert "known pipelines: device-sessions, page-views" in capsys.readouterr().err


def test_an_unexpected_error_is_still_a_json_answer(producer: FakeProducer) -> None:
    """A surprise inside the endpoint (here a producer that raises what it never should)
    comes back as a JSON 500 saying so, not as a plain-text page."""

    def broken_put(*args: object, **kwargs: object) -> Future[PutResult]:
        raise ValueError("a stream has at least one open shard")

    producer.put = broken_put  # type: ignore[method-assign]
    with TestClient(make_ingest(producer).app, raise_server_exceptions=False) as http:
        answer = post(http, b'{"event_id": "e1", "ts": 1795773600000, "page": "/a"}')
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert "ValueError: a stream has at least one open shard" in answer.json()["error"]
