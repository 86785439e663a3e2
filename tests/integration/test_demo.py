"""The demo a new user runs first: it starts its own emulator, shows windows filling, and
stops every part cleanly, on a timer or on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.emulator, pytest.mark.slow]


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def port_open(url: str) -> bool:
    host, port = re.sub(r"^http://", "", url).split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def emulator_url(output: str) -> str:
    match = re.search(r"starting the embedded emulator on (http://[0-9.:]+)", output)
    assert match, output
    return match.group(1)


def test_a_timed_demo_shows_windows_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shardflow", "demo", "--duration", "8", "--rate", "60"],
        env=demo_env(),
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "window_start" in done.stdout and "/home" in done.stdout
    last = done.stdout.rsplit("shardflow demo:", 1)[1]
    produced = int(re.search(r"produced (\d+)", last).group(1))  # type: ignore[union-attr]
    processed = int(re.search(r"processed (\d+)", last).group(1))  # type: ignore[union-attr]
    assert produced > 100 and processed == produced, last
    assert not port_open(emulator_url(done.stdout)), "the emulator was left running"


def test_ctrl_c_stops_every_part() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "demo", "--rate", "30"],
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(7)
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-3000:]
    assert "/home" in out
    assert not port_open(emulator_url(out)), "the emulator was left running"
