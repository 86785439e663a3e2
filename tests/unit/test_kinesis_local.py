"""The kinesis-local launcher's checks: it never runs a copy that is not bound to loopback,
says what to run when kinesis-local is missing, and the tests that need it fail (never
skip) without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardflow import kinesis_local
from shardflow.kinesis_local import (
    BIND_ANY,
    BIND_LOOPBACK,
    VERSION,
    KinesisLocalUnavailable,
    check_installed,
    listening_addresses,
    loopback_source,
)

ROOT = Path(__file__).resolve().parents[2]


def _install(root: Path, version: str = VERSION, main: str = f"x({BIND_ANY});") -> Path:
    package = root / "node_modules" / "kinesis-local"
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": version}))
    (package / "main.js").write_text(main)
    return package


def test_the_one_bind_address_becomes_loopback() -> None:
    source = f"a; Host$().{BIND_ANY}, b; other 0.0.0.0 text"
    assert loopback_source(source) == f"a; Host$().{BIND_LOOPBACK}, b; other 0.0.0.0 text"


@pytest.mark.parametrize("times", [0, 2])
def test_a_build_without_exactly_one_bind_address_is_refused(times: int) -> None:
    with pytest.raises(KinesisLocalUnavailable, match=f"{times} times, not once"):
        loopback_source(f"x({BIND_ANY});" * times)


def test_missing_or_other_version_says_to_run_make_test(tmp_path: Path) -> None:
    with pytest.raises(KinesisLocalUnavailable, match=r"not installed .*run `make test`"):
        check_installed(tmp_path)
    _install(tmp_path, version="0.5.2")
    with pytest.raises(KinesisLocalUnavailable, match=rf"0\.5\.2 .* {VERSION}: run `make test`"):
        check_installed(tmp_path)


def test_the_loopback_copy_is_written_beside_the_package(tmp_path: Path) -> None:
    _install(tmp_path)
    script = kinesis_local.loopback_copy(tmp_path)
    assert script.read_text() == f"x({BIND_LOOPBACK});"
    assert (tmp_path / kinesis_local.WATCH_SCRIPT).read_text().startswith("//")


def test_listening_addresses_read_the_kernel_tables(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"  # 127.0.0.1:8080 LISTEN
        + "   1: 00000000:1F91 00000000:0000 0A 00000000:00000000\n"  # 0.0.0.0:8081 LISTEN
        + "   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000\n"  # established: ignored
    )
    assert listening_addresses(8080, tmp_path) == {"0100007F"}
    assert listening_addresses(8081, tmp_path) == {"00000000"}
    assert listening_addresses(8082, tmp_path) == set()
    assert listening_addresses(8080, tmp_path / "absent") is None


def test_without_kinesis_local_its_tests_fail_with_the_fix(tmp_path: Path) -> None:
    test = tmp_path / "test_needs_it.py"
    test.write_text("def test_needs_it(kinesis_local):\n    pass\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_ENDPOINT_URL", "PYTEST_"))
    }
    env[kinesis_local.DIR_VARIABLE] = str(tmp_path / "nothing-here")
    plugins = ["-p", "tests.kinesis_local", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "--rootdir", str(tmp_path), "-q", str(test)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert f"kinesis-local {VERSION} is not installed" in done.stdout
    assert "run `make test`" in done.stdout
