"""``shardflow serve`` over real HTTP on loopback, against the emulator.

The story: ten minutes of page views are in the results table. The server starts with a
bearer token; a client without it is refused, one with it reads a key's windows and the
top keys; then schemathesis generates hundreds of requests from the server's own OpenAPI
description, valid and invalid, and checks every answer against that description: status
codes, content types, bodies, that invalid input is refused and that the token is
enforced. (Valid-looking requests the API refuses for reasons no schema can say, such as
an aggregate of another pipeline or a range past the limit, are not held against it:
the positive_data_acceptance check is left out.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AwsEnv
from tests.integration.served import MINUTE, get, load_recent, serving

pytestmark = pytest.mark.emulator

TOKEN = "integration-token-0123456789"


def test_the_api_over_http(aws: AwsEnv) -> None:
    t0, _ = load_recent(aws)
    with serving(aws, env={"SHARDFLOW_SERVE_TOKEN": TOKEN}) as url:
        status, body = get(f"{url}/api/v1/pipelines/page-views/windows")
        assert status == 401 and "Bearer" in body["error"]
        status, body = get(
            f"{url}/api/v1/pipelines/page-views/windows",
            [("key", "/p02"), ("since", str(t0)), ("until", str(t0 + 10 * MINUTE))],
            TOKEN,
        )
        assert status == 200
        assert [(w["views"], w["final"]) for w in body["windows"]] == [(9, True)] * 9 + [(9, False)]
        status, top = get(f"{url}/api/v1/pipelines/page-views/top", [("by", "views")], TOKEN)
        assert status == 200 and top["top"][0] == {"rank": 1, "key": "/p11", "value": 36}
        status, window = get(f"{url}/api/v1/pipelines/page-views/windows/{t0}", [], TOKEN)
        assert status == 200 and window["keys"] == 12 and window["final"] is True


def test_the_openapi_description_matches_what_the_server_does(aws: AwsEnv, tmp_path: Path) -> None:
    load_recent(aws)
    schemathesis = Path(sys.executable).parent / "st"
    with serving(aws, env={"SHARDFLOW_SERVE_TOKEN": TOKEN}) as url:
        done = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "30",
                "--seed",
                "7",
                "--generation-database",
                "none",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--no-color",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )
    report = done.stdout[-6000:]
    assert done.returncode == 0, report
    assert "5 selected / 5 total" in done.stdout, report
    assert " failed" not in done.stdout.split("SUMMARY")[-1], report
