"""kinesis-local, the npm package of kinesis-mock, pinned and bound to loopback.

moto never ends a closed shard, so whatever needs Kinesis' real lineage semantics (a parent
read to its end, ``ChildShards``, ShardFilter, 56-digit sequence numbers) runs Kinesis on
kinesis-local instead, through ``AWS_ENDPOINT_URL_KINESIS``, with every other service still
on moto. The resharding tests and the KCL tests do.

- **Install**: ``make kinesis-local`` (a prerequisite of ``make test``) runs ``npm ci`` on
  ``tests/kinesis-local/package-lock.json`` into ``.cache/kinesis-local``
  (``SHARDFLOW_KINESIS_LOCAL_DIR`` to put it elsewhere), then ``python -m
  shardflow.kinesis_local --check``.
- **Loopback**: kinesis-local 0.6.2 always listens on 0.0.0.0; it has no host setting. At
  each launch a copy of its ``main.js`` is written with the one bind address replaced by
  127.0.0.1. If the pattern is not there exactly once, nothing is started (an unpatched
  copy would listen on every interface). Once it is up, the listening sockets are checked
  (on Linux, in ``/proc/net/tcp*``): anything but 127.0.0.1 stops it.
- **Launch**: :class:`KinesisLocal` (the pytest fixture in ``tests/kinesis_local.py``), or
  ``python -m shardflow.kinesis_local`` in the foreground. Plain HTTP is the endpoint; the
  TLS port (a self-signed certificate) is opened too, on loopback, since kinesis-local
  always serves both. The process exits by itself if the one that started it dies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO

from shardflow.emulator import free_port

VERSION = "0.6.2"
"""The kinesis-local version the patch and the tests were checked against (the lock file
in tests/kinesis-local pins the same)."""
HOST = "127.0.0.1"
DEFAULT_PLAIN_PORT = 4568
DEFAULT_TLS_PORT = 4567
DIR_VARIABLE = "SHARDFLOW_KINESIS_LOCAL_DIR"

BIND_ANY = 'em("0.0.0.0")'
"""main.js builds the listening address from this literal (ip4s ``Host.fromString``), once
for both servers."""
BIND_LOOPBACK = f'em("{HOST}")'

LOOPBACK_SCRIPT = "main.loopback.js"
WATCH_SCRIPT = "exit-with-parent.js"
_WATCH_SOURCE = """\
// Loaded with --require: leave when the process that started kinesis-local is gone.
const parent = process.ppid;
setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 1000).unref();
"""

INSTALL_HINT = (
    "run `make test` (it installs kinesis-local with npm first), or `make kinesis-local` "
    "to install only it; Node.js (checked with 20) and npm are needed"
)


class KinesisLocalUnavailable(RuntimeError):
    """kinesis-local is not installed, cannot be bound to loopback, or did not start."""


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def install_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``make kinesis-local`` installs it: ``.cache/kinesis-local`` in the checkout."""
    env = os.environ if env is None else env
    configured = env.get(DIR_VARIABLE)
    return Path(configured) if configured else repo_root() / ".cache" / "kinesis-local"


def package_dir(root: Path) -> Path:
    return root / "node_modules" / "kinesis-local"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise KinesisLocalUnavailable(
            "kinesis-local needs Node.js, and `node` is not on PATH: install Node.js (checked "
            "with 20; https://nodejs.org), then run `make test`"
        )
    return node


def check_installed(root: Path) -> Path:
    """The installed package's directory; raises with what to do when it is missing or
    another version."""
    package = package_dir(root)
    manifest = package / "package.json"
    if not manifest.is_file() or not (package / "main.js").is_file():
        raise KinesisLocalUnavailable(
            f"kinesis-local {VERSION} is not installed (nothing at {package}): {INSTALL_HINT}"
        )
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if version != VERSION:
        raise KinesisLocalUnavailable(
            f"kinesis-local {version} is installed at {package}, but shardflow is checked "
            f"against {VERSION}: {INSTALL_HINT}"
        )
    return package


def loopback_source(source: str) -> str:
    """``main.js`` with its bind address replaced by 127.0.0.1, or an error if the pattern
    is not there exactly once (a changed build: never run it unpatched)."""
    found = source.count(BIND_ANY)
    if found != 1:
        raise KinesisLocalUnavailable(
            f"cannot bind kinesis-local to {HOST}: its main.js holds {BIND_ANY} {found} "
            f"times, not once (was it built differently from {VERSION}?). Not starting it: "
            "unpatched, it would listen on every interface"
        )
    return source.replace(BIND_ANY, BIND_LOOPBACK)


def _write_atomically(path: Path, text: str) -> None:
    """Concurrent sessions may launch at once: each writes a file of its own, then renames."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def loopback_copy(root: Path) -> Path:
    """Write the loopback-bound copy of main.js (and the parent watch) into ``root``;
    returns the copy's path."""
    package = check_installed(root)
    source = (package / "main.js").read_text(encoding="utf-8")
    script = root / LOOPBACK_SCRIPT
    _write_atomically(script, loopback_source(source))
    _write_atomically(root / WATCH_SCRIPT, _WATCH_SOURCE)
    return script


def listening_addresses(port: int, proc: Path = Path("/proc/net")) -> set[str] | None:
    """The local addresses (kernel hex form) of TCP sockets listening on ``port``, from
    /proc/net/tcp and tcp6; None where there is no /proc (not Linux)."""
    tables = [proc / "tcp", proc / "tcp6"]
    if not tables[0].exists():
        return None
    found: set[str] = set()
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                continue
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK_HEX = "0100007F"
"""127.0.0.1 as /proc/net/tcp writes it (little-endian)."""


class KinesisLocal:
    """kinesis-local in a child process on loopback; :meth:`stop` ends it by its PID.

    Ports 0 pick free ones (and a start that loses a port to another process is tried
    again on new ones). ``log`` receives its output (a temporary file by default).
    """

    def __init__(
        self,
        root: Path | None = None,
        plain_port: int = 0,
        tls_port: int = 0,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root or install_dir()
        self._wanted = (plain_port, tls_port)
        self.plain_port = plain_port
        self.tls_port = tls_port
        self._log_path = log
        self._extra_env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.plain_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> KinesisLocal:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> str:
        """Launch and wait until it answers; returns the plain-HTTP endpoint."""
        node = node_binary()
        script = loopback_copy(self.root)
        fixed = all(self._wanted)
        attempts = 1 if fixed else 3
        for attempt in range(attempts):
            self.plain_port = self._wanted[0] or free_port(HOST)
            self.tls_port = self._wanted[1] or free_port(HOST)
            while self.tls_port == self.plain_port:
                self.tls_port = free_port(HOST)
            try:
                self._launch(node, script, timeout)
                return self.url
            except KinesisLocalUnavailable as exc:
                if attempt + 1 == attempts or "EADDRINUSE" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _launch(self, node: str, script: Path, timeout: float) -> None:
        package = package_dir(self.root)
        env = {
            **os.environ,
            "LOG_LEVEL": "WARN",
            **self._extra_env,
            "KINESIS_MOCK_PLAIN_PORT": str(self.plain_port),
            "KINESIS_MOCK_TLS_PORT": str(self.tls_port),
            "KINESIS_MOCK_CERT_PATH": str(package / "server.json"),
        }
        if self._log_path is not None:
            self._log = self._log_path.open("ab")
        else:
            # Appending: reading it back (on a failed start) must not move where node writes.
            self._log = tempfile.TemporaryFile(mode="a+b", prefix="kinesis-local-")  # noqa: SIM115
        self._process = subprocess.Popen(
            [node, "--require", str(self.root / WATCH_SCRIPT), str(script)],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                output = self.output()
                self.stop()
                raise KinesisLocalUnavailable(f"kinesis-local exited at start: {output}")
            if time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise KinesisLocalUnavailable(
                    f"kinesis-local did not answer at {self.url} within {timeout:.0f}s: {output}"
                )
            time.sleep(0.05)
        self._check_loopback()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _check_loopback(self) -> None:
        for port in (self.plain_port, self.tls_port):
            addresses = listening_addresses(port)
            if addresses is None:
                return  # no /proc here: the patch alone has to do
            if addresses != {LOOPBACK_HEX}:
                self.stop()
                raise KinesisLocalUnavailable(
                    f"kinesis-local listens on port {port} at {sorted(addresses)} (kernel "
                    f"hex), not only on {HOST}: stopped it"
                )

    def output(self, limit: int = 3000) -> str:
        """The end of what kinesis-local wrote."""
        if self._log is None:
            return ""
        self._log.flush()
        if self._log_path is not None:
            data = self._log_path.read_bytes()
        else:
            self._log.seek(0)
            data = self._log.read()
        text = data.decode("utf-8", errors="replace").strip()
        exit_status = self._process.poll() if self._process is not None else None
        return text[-limit:] or f"no output (exit status {exit_status})"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process started here (by its PID), SIGKILL if it lingers."""
        process = self._process
        try:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shardflow.kinesis_local",
        description=f"kinesis-local {VERSION} on {HOST}, in the foreground (Ctrl-C stops it).",
    )
    parser.add_argument("--plain-port", type=int, default=DEFAULT_PLAIN_PORT, help="0: any")
    parser.add_argument("--tls-port", type=int, default=DEFAULT_TLS_PORT, help="0: any")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check the installation and write the loopback copy (used by make)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    root = install_dir()
    try:
        if args.check:
            node_binary()
            script = loopback_copy(root)
            print(f"kinesis-local {VERSION} installed; loopback copy at {script}")
            return 0
        server = KinesisLocal(root, args.plain_port, args.tls_port)
        server.start()
    except KinesisLocalUnavailable as exc:
        print(f"kinesis-local: {exc}", file=sys.stderr)
        return 1
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(
        f"kinesis-local {VERSION} listening on {server.url} (TLS on {HOST}:{server.tls_port})",
        flush=True,
    )
    print(f"  export AWS_ENDPOINT_URL_KINESIS={server.url}", flush=True)
    while not stopped.wait(0.5):
        if not server.running():
            print(f"kinesis-local exited: {server.output()}", file=sys.stderr)
            server.stop()
            return 1
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
