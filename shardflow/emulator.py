"""The embedded AWS emulator: moto's server on loopback, one port for every service."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import FrameType
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566

EMULATOR_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
"""Dummy credentials and a region: the emulator accepts any, boto3 insists on some."""

EMULATOR_CREDENTIALS = ("test", "test")


class EmulatorUnavailable(RuntimeError):
    """moto is not installed, or the emulator did not start."""


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def url_for(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def is_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_in_thread(host: str = DEFAULT_HOST, port: int = 0) -> tuple[Any, str]:
    """Start moto's server on a thread of this process; returns (server, url)."""
    try:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 (optional dependency)
    except ImportError as exc:
        raise EmulatorUnavailable(
            "the embedded emulator needs moto: pip install 'shardflow[emulator]'"
        ) from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = port or free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    url = url_for(host, port)
    deadline = time.monotonic() + 15
    while not is_ready(url):
        if time.monotonic() > deadline:
            server.stop()
            raise EmulatorUnavailable(f"the emulator did not answer at {url}")
        time.sleep(0.05)
    return server, url


def reset(url: str) -> None:
    """Empty every service's state (moto's reset endpoint)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def run_foreground(host: str, port: int, exit_with_parent: bool = False) -> int:
    """``shardflow emulator``: serve until SIGINT or SIGTERM."""
    server, url = start_in_thread(host, port)
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if exit_with_parent:
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    print(f"shardflow emulator (moto) listening on {url}", flush=True)
    print(f"  export AWS_ENDPOINT_URL={url}", flush=True)
    stopped.wait()
    server.stop()
    return 0


class EmulatorProcess:
    """The emulator in a child process, for the demo: stopped on exit, and exits by itself
    if this process dies."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = url_for(host, self.port)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> str:
        command = [
            sys.executable,
            "-m",
            "shardflow",
            "emulator",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-with-parent",
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not is_ready(self.url):
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise EmulatorUnavailable(f"the emulator exited: {error.strip()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorUnavailable(f"the emulator did not answer at {self.url}")
            time.sleep(0.1)
        return self.url

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def env(self) -> Mapping[str, str]:
        return {**EMULATOR_ENV, "AWS_ENDPOINT_URL": self.url}
