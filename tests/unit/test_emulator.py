"""The embedded emulator launcher: a busy port is a clear error, never a hang.

moto's ThreadedMotoServer.start() waits for an event that is never set when the server
cannot bind in its thread, so ``shardflow emulator --port <busy port>`` used to hang.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from shardflow import emulator
from shardflow.emulator import EmulatorProcess, EmulatorUnavailable, check_can_listen

HOST = "127.0.0.1"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another server listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_another_server_listens_on_is_in_use(busy_port: int) -> None:
    with pytest.raises(EmulatorUnavailable) as exc:
        check_can_listen(HOST, busy_port)
    assert str(exc.value) == (
        f"port {busy_port} on {HOST} is in use: is LocalStack or another emulator running?"
        " use --port"
    )


def test_a_port_bound_by_another_socket_is_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
        with pytest.raises(EmulatorUnavailable, match="is in use"):
            check_can_listen(HOST, port)


def test_a_free_port_can_be_listened_on() -> None:
    check_can_listen(HOST, emulator.free_port(HOST))


def test_a_port_held_only_by_time_wait_connections_is_free() -> None:
    """An emulator that was just stopped leaves connections in TIME_WAIT on its port; the
    server binds with SO_REUSEADDR, so it can listen there again at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((HOST, 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection((HOST, port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.recv(1)
        client.close()
    check_can_listen(HOST, port)


def test_an_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(EmulatorUnavailable, match=r"cannot listen on no-such-host\.invalid:4566"):
        check_can_listen("no-such-host.invalid", 4566)


def test_starting_on_a_busy_port_fails_at_once(busy_port: int) -> None:
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            server, _ = emulator.start_in_thread(HOST, busy_port)
            server.stop()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "start_in_thread hangs on a busy port"
    (error,) = outcome
    assert isinstance(error, EmulatorUnavailable)
    assert "is in use" in str(error)


def test_the_emulator_command_on_a_busy_port_exits_1_with_one_line(busy_port: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shardflow", "emulator", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"shardflow emulator: port {busy_port} on {HOST} is in use: is LocalStack or another"
        " emulator running? use --port\n"
    )


def test_a_child_that_fails_to_start_reports_its_stderr(busy_port: int) -> None:
    child = EmulatorProcess(HOST, busy_port)
    with pytest.raises(EmulatorUnavailable) as exc:
        child.start(timeout=60)
    assert "the emulator exited" in str(exc.value)
    assert f"port {busy_port} on {HOST} is in use" in str(exc.value)


@pytest.mark.emulator
def test_the_child_emulator_writes_stderr_to_a_file_not_a_pipe() -> None:
    """Nobody reads the child's stderr while it runs: a pipe would fill up and block it."""
    child = EmulatorProcess()
    try:
        url = child.start()
        assert emulator.is_ready(url)
        process = child._process
        assert process is not None
        assert process.stderr is None  # not a pipe of ours
    finally:
        child.stop()
    assert not emulator.is_ready(url, timeout=0.5)
