"""The local topology of `make up` (and of the end-to-end tests): Prefect server, work pool,
deployments from prefect.yaml, the fork server and one process worker, and the Freight API,
supervised together.

Everything started here is stopped by `Stack.stop()`, including flow-run processes and the deploy
commands they spawned, which Prefect starts in sessions of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

from freight import forkclient, forkserver, procs
from freight.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "freight"
# Deploys have a queue of their own in the pool, so that its concurrency limit (a burst must not
# start more flow runs than the machine can start at once) never holds back maintenance runs.
DEPLOY_QUEUE = "deploys"

# Prefect settings `make up` runs with, and why.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # behind a firewall: no phoning home
    "DO_NOT_TRACK": "1",
    # Leases survive a server restart on disk instead of living in one process's memory.
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
        "prefect.server.concurrency.lease_storage.filesystem"
    ),
    # The worker polls for new runs every 10 s by default: most of a deploy's start latency.
    "PREFECT_WORKER_QUERY_SECONDS": "0.5",
    # Run logs reach the Prefect UI every 2 s by default; deploy logs should feel live.
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Services Freight does not use; each costs memory and database writes on a small machine.
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
}


def prefect_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every Prefect process of the stack (server, CLI, worker, flow runs)."""
    api = urlparse(settings.prefect_api_url)
    home = settings.home.resolve()
    env = {**(os.environ if base is None else base), **PREFECT_DEFAULTS}
    env.update(
        {
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_SERVER_API_HOST": api.hostname or "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(api.port or 4200),
            # Every process of the stack (API, flow runs) reads the same settings from here.
            **settings.to_env(),
            "FREIGHT_PROJECT_DIR": str(PROJECT_ROOT),
            "FREIGHT_PYTHON": sys.executable,
            forkclient.SOCKET_ENV: str(forkserver.default_socket(home)),
        }
    )
    if settings.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = settings.prefect_database_url
    return env


def prefect_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "prefect"), *args]


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ui_url(self) -> str:
        return self.settings.prefect_api_url.removesuffix("/api")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start_process(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def run(self, *argv: str) -> None:
        result = subprocess.run(
            argv, env=self.env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{result.stdout}{result.stderr}")

    def wait_for_socket(self, name: str, path: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / f'{name}.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not listen on {path} within {timeout}s")
            time.sleep(0.05)

    def limit_queue(self, name: str, limit: int, timeout: float = 60) -> None:
        """Create the work queue with a concurrency limit, or set the limit if it exists."""
        queues = f"{self.settings.prefect_api_url}/work_pools/{WORK_POOL}/queues"
        deadline = time.monotonic() + timeout
        # Prefect answers 503 while its SQLite database is busy (as it is just after start).
        while True:
            response = httpx.post(queues, json={"name": name, "concurrency_limit": limit})
            if response.status_code == 409:
                response = httpx.patch(f"{queues}/{name}", json={"concurrency_limit": limit})
            if response.status_code != 503 or time.monotonic() > deadline:
                response.raise_for_status()
                return
            time.sleep(0.5)

    def wait_healthy(self, name: str, url: str, timeout: float = 120) -> None:
        """Wait until the process answers 200 at url."""
        deadline = time.monotonic() + timeout
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / f'{name}.log'}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not healthy at {url} after {timeout}s")

    def stop(self, grace: float = 20) -> None:
        """Stop flow runs and worker first (they need the server to report), then the server."""
        first = [name for name in self.processes if name != "server"]
        _terminate([self.processes[n] for n in first], grace)
        _terminate([self.processes[n] for n in self.processes if n == "server"], grace)
        self.processes.clear()


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _terminate(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    tree = procs.descendants({p.pid for p in processes if p.poll() is None})
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        # New flow runs may have been spawned meanwhile; they are stopped too.
        tree |= procs.descendants({p.pid for p in processes if p.poll() is None})
        alive = {p.pid for p in procs.live_processes()}
        if not tree & alive:
            break
        time.sleep(0.1)
    _signal_all(tree & {p.pid for p in procs.live_processes()}, signal.SIGKILL)
    for process in processes:
        process.wait()


@contextmanager
def running_stack(
    settings: Settings, *, extra_env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """Start server, work pool, deployments and worker; stop all of it on exit."""
    log_dir = settings.home.resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        settings=settings, env=prefect_env(settings) | dict(extra_env or {}), log_dir=log_dir
    )
    try:
        stack.start_process("server", prefect_command("server", "start"))
        socket_path = Path(stack.env[forkclient.SOCKET_ENV])
        stack.start_process(
            "forkserver", [sys.executable, "-m", "freight.forkserver", str(socket_path)]
        )
        stack.wait_healthy("server", f"{settings.prefect_api_url}/health")
        stack.wait_for_socket("forkserver", socket_path)
        stack.run(
            *prefect_command("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite")
        )
        stack.limit_queue(DEPLOY_QUEUE, settings.concurrent_deploys)
        stack.run(
            *prefect_command(
                "deploy",
                "--all",
                "--no-prompt",
                "--prefect-file",
                str(PROJECT_ROOT / "prefect.yaml"),
            )
        )
        stack.start_process(
            "worker", prefect_command("worker", "start", "--pool", WORK_POOL, "--type", "process")
        )
        stack.start_process("api", [sys.executable, "-m", "freight.api"])
        stack.wait_healthy("api", f"{stack.api_url}/health")
        yield stack
    finally:
        stack.stop()
