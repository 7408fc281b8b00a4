"""The fork server and its client as the worker uses them: real processes, a real unix socket.

The server is told to become `tests.forkserver_target` instead of Prefect's engine, so each
behaviour (environment, streams, exit codes, signals, a killed client, a stopped server) can be
seen from outside; the end-to-end tests run the real engine through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from freight import forkclient, procs
from freight.forkclient import SOCKET_ENV
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    socket: Path

    def client(self, *argv: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "freight.forkclient", *argv],
            env={**os.environ, SOCKET_ENV: str(self.socket), **env},
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    path = tmp_path / "run" / "fork.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "freight.forkserver", str(path), "tests.forkserver_target"],
        cwd=ROOT,
    )
    wait_for(lambda: path.exists() or process.poll() is not None, 60, "the fork server")
    assert process.poll() is None
    yield Server(process, path)
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def ready_pid(client: subprocess.Popen[str]) -> int:
    assert client.stdout
    line = client.stdout.readline()
    assert line.startswith("ready "), line
    return int(line.split()[1])


def test_forked_run_has_the_clients_environment_arguments_and_streams(
    server: Server, tmp_path: Path
) -> None:
    client = server.client("report", "x y", cwd=tmp_path, FORK_TEST_MARKER="m-1")
    out, err = client.communicate("hello\n", timeout=30)
    assert client.returncode == 0, err
    report = json.loads(out)
    # Forked by the server, not started afresh by the client.
    assert report["ppid"] == server.process.pid and report["pid"] != client.pid
    # Started from a worker's temporary directory, it runs in the installed project, wherever
    # that is on this host.
    assert report["cwd"] == forkclient.PROJECT_DIR != str(tmp_path)
    assert report["argv"] == ["report", "x y"]
    assert report["marker"] == "m-1"
    assert report["stdin"] == "hello"
    assert err == "to stderr\n"


def test_exit_code_of_the_run_is_the_clients(server: Server, tmp_path: Path) -> None:
    client = server.client("exit", "7", cwd=tmp_path)
    client.communicate(timeout=30)
    assert client.returncode == 7


def test_a_run_killed_by_a_signal_kills_its_client_the_same_way(
    server: Server, tmp_path: Path
) -> None:
    client = server.client("kill-self", cwd=tmp_path)
    client.communicate(timeout=30)
    assert client.returncode == -signal.SIGKILL


def test_sigterm_to_the_client_reaches_the_run(server: Server, tmp_path: Path) -> None:
    client = server.client("wait-term", cwd=tmp_path)
    ready_pid(client)
    client.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert out == "terminated\n"
    assert client.returncode == 3


def test_a_killed_client_takes_its_run_with_it(server: Server, tmp_path: Path) -> None:
    client = server.client("wait-term", cwd=tmp_path)
    child = ready_pid(client)
    client.kill()
    client.wait(10)
    wait_for(lambda: not procs.is_alive(child), 10, "the run to be killed")


def test_runs_outlive_a_stopped_server_and_their_clients_wait_for_them(
    server: Server, tmp_path: Path
) -> None:
    done = tmp_path / "done"
    client = server.client("wait-file", str(done), cwd=tmp_path)
    child = ready_pid(client)
    server.process.terminate()
    server.process.wait(10)
    assert not server.socket.exists()
    assert procs.is_alive(child) and client.poll() is None
    done.touch()
    client.wait(30)
    assert not procs.is_alive(child)


def test_without_a_server_the_client_starts_the_engine_itself(tmp_path: Path) -> None:
    client = subprocess.run(
        [sys.executable, "-m", "freight.forkclient"],
        env={**os.environ, SOCKET_ENV: str(tmp_path / "missing.sock")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"freight: no fork server at {tmp_path / 'missing.sock'}" in client.stderr
    # Prefect's engine itself answered: it was started with no flow run to run.
    assert "Invalid flow run id" in client.stderr
    assert client.returncode == 1


def test_a_fork_server_refuses_the_run_directory_of_another_host(tmp_path: Path) -> None:
    path = tmp_path / "run" / "fork.sock"
    path.parent.mkdir()
    (tmp_path / "run" / "fork.sock.host").write_text("elsewhere")
    refused = subprocess.run(
        [sys.executable, "-m", "freight.forkserver", str(path)],
        env={**os.environ, "FREIGHT_HOST_NAME": "here"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "belongs to host elsewhere" in refused.stderr, refused.stderr
    assert not path.exists()
