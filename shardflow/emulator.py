"""The embedded AWS emulator: moto's server on loopback, one port for every service."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import IO, Any

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


def _family(host: str) -> socket.AddressFamily:
    # As werkzeug, which serves moto, chooses it.
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _bind_error(host: str, port: int, reuse_address: bool) -> OSError | None:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _answers(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def check_can_listen(host: str, port: int) -> None:
    """Raise EmulatorUnavailable unless ``host:port`` can be bound.

    moto's threaded server would otherwise wait forever: when binding fails in its thread,
    the event ``start()`` waits for is never set. The test bind has SO_REUSEADDR off, so
    it also fails where another server listens on the wildcard address (macOS allows the
    more specific bind with SO_REUSEADDR). Connections left in TIME_WAIT by an emulator
    that was just stopped fail that bind too, yet the server, which sets SO_REUSEADDR, can
    listen there: so a port that binds with SO_REUSEADDR and where nothing answers is free.
    """
    error = _bind_error(host, port, reuse_address=False)
    if error is None:
        return
    if error.errno == errno.EADDRINUSE:
        if _bind_error(host, port, reuse_address=True) is None and not _answers(host, port):
            return
        raise EmulatorUnavailable(
            f"port {port} on {host} is in use: is LocalStack or another emulator running?"
            " use --port"
        )
    raise EmulatorUnavailable(f"cannot listen on {host}:{port}: {error.strerror or error}")


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
    if port:
        check_can_listen(host, port)
    else:
        port = free_port(host)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    # start() waits without a timeout for the server to bind; should the port be taken
    # between the check and now, give up instead of hanging.
    starting = threading.Thread(target=server.start, name="moto-start", daemon=True)
    starting.start()
    starting.join(timeout=15)
    url = url_for(host, port)
    if starting.is_alive():
        raise EmulatorUnavailable(f"the emulator could not listen on {host}:{port}")
    deadline = time.monotonic() + 15
    while not is_ready(url):
        if time.monotonic() > deadline:
            server.stop()
            raise EmulatorUnavailable(f"the emulator did not answer at {url}")
        time.sleep(0.05)
    return server, url


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
        self._stderr: IO[bytes] | None = None

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
        # stderr goes to a file, not a pipe: nobody reads a pipe while the emulator runs,
        # and a full one would block it. The file is read only if the start fails, and
        # stop() closes it.
        self._stderr = tempfile.TemporaryFile(prefix="shardflow-emulator-")  # noqa: SIM115
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not is_ready(self.url):
            if self._process.poll() is not None:
                errors = self._errors()
                self.stop()
                raise EmulatorUnavailable(f"the emulator exited: {errors}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorUnavailable(f"the emulator did not answer at {self.url}")
            time.sleep(0.1)
        return self.url

    def _errors(self) -> str:
        """The end of what the emulator wrote to stderr."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", errors="replace").strip()
        return text[-2000:] or f"exit status {self._process.returncode if self._process else '?'}"

    def stop(self) -> None:
        try:
            if self._process is None or self._process.poll() is not None:
                return
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        finally:
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
