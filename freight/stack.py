"""The local topology of `make up` (and of the end-to-end tests): the embedded PostgreSQL,
Prefect server, work pool, deployments from prefect.yaml, the fork server and one process
worker, the Freight API and the reconciler, supervised together: a process that dies is started
again (a few times a minute at most).

Everything started here is stopped by `Stack.stop()`, including flow-run processes and the deploy
commands they spawned, which Prefect starts in sessions of their own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import certifi
import httpx

from freight import forkclient, procs
from freight.db.migrate import upgrade
from freight.forkserver import default_socket
from freight.names import DEFAULT_WORK_QUEUE
from freight.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "freight"
# Where the scheduled flows (maintenance, poll-vcs) go: the pool's own queue, which every
# worker serves. Deploys have queues of their own (DEFAULT_WORK_QUEUE, or their environment's),
# so that a concurrency limit on them never holds back maintenance runs.
FLOWS_QUEUE = "default"

# Prefect settings `make up` runs with, and why.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # behind a firewall: no phoning home
    "DO_NOT_TRACK": "1",
    # Leases survive a server restart on disk instead of living in one process's memory.
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
        "prefect.server.concurrency.lease_storage.filesystem"
    ),
    # The worker polls for new runs every 10 s by default. Freight starts the runs it hands
    # over itself (freight/execution/launcher.py); the worker takes runs started in Prefect
    # and those the launcher had no room for. Every poll costs the server some work.
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    # Run logs reach the Prefect UI every 2 s by default; deploy logs should feel live there
    # too (Freight's own log has every line within 0.5 s), at one request a second per run.
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "1",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # Services Freight does not use; each costs memory and database writes on a small machine.
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
}


def prefect_env(
    settings: Settings,
    base: Mapping[str, str] | None = None,
    *,
    forkserver: bool = True,
    embedded_db: bool = True,
) -> dict[str, str]:
    """The environment of every Prefect process of the stack (server, CLI, worker, flow runs);
    `forkserver`: whether a fork server runs on this host (the API starts runs there);
    `embedded_db`: whether this host runs the embedded PostgreSQL."""
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
            # The worker runs `python -m freight.forkclient` (prefect.yaml): this Python.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PREFECT_API_DATABASE_CONNECTION_URL": settings.prefect_database_url,
            # Prefect's API starts deploys and shows every deploy's log: without auth, anyone
            # who reaches its port could deploy any app past Freight's API and its keys.
            "PREFECT_SERVER_API_AUTH_STRING": prefect_auth(settings),
            "PREFECT_API_AUTH_STRING": prefect_auth(settings),
        }
    )
    if embedded_db:
        # Where libpq and asyncpg find the embedded PostgreSQL's password. Elsewhere (a worker
        # host) the operator's own PGPASSFILE, if any, is the one to use.
        env["PGPASSFILE"] = str(passfile(settings))
    if forkserver:
        env[forkclient.SOCKET_ENV] = str(default_socket(home))
    else:
        env.pop(forkclient.SOCKET_ENV, None)
    if api.scheme == "http":
        # Prefect's clients talk plain HTTP here and verify nothing, yet each parses the whole
        # CA bundle when it is made (~50 ms of CPU, and a flow run makes many: a third of its
        # CPU in a burst). A bundle of one certificate costs 1 ms.
        env["PREFECT_API_SSL_CERT_FILE"] = str(_one_certificate(home / "run"))
    return env


PREFECT_AUTH_USER = "freight"


def passfile(settings: Settings) -> Path:
    """The password file of the embedded PostgreSQL (see freight.embedded_db)."""
    return settings.home.resolve() / "run" / "pgpass"


def prefect_auth(settings: Settings) -> str:
    """The `user:password` Prefect's server requires of every client (and the Prefect UI asks
    for once): FREIGHT_PREFECT_AUTH where it is given (a worker host gets the control plane's),
    otherwise made on the first start and kept under FREIGHT_HOME, readable by its owner only."""
    if settings.prefect_auth is not None:
        return settings.prefect_auth.get_secret_value()
    path = settings.home.resolve() / "prefect-auth"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = f"{PREFECT_AUTH_USER}:{secrets.token_urlsafe(24)}"
        # Written whole under another name, then renamed: a reader never sees half of it.
        part = path.with_name(f".prefect-auth.{os.getpid()}")
        part.write_text(made)
        part.chmod(0o600)
        part.replace(path)
    return path.read_text().strip()


def guard_home(settings: Settings) -> None:
    """FREIGHT_HOME for Freight only: a deploy command, run as a user of its own, may enter the
    directories down to its checkout and temporary directory, and read nothing else here (the
    logs, the auth string, the sockets, Prefect's data, the mirrors)."""
    home = settings.home.resolve()
    workspaces = settings.workspaces
    for path, mode in (
        (home, 0o711),
        (workspaces, 0o711),
        (workspaces / "checkouts", 0o711),
        (workspaces / "tmp", 0o711),
        (workspaces / "mirrors", 0o700),
        (home / "logs", 0o700),
        (home / "run", 0o700),
        (home / "prefect", 0o700),
    ):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)


def _one_certificate(directory: Path) -> Path:
    path = directory / "prefect-api-ca.pem"
    if not path.exists():
        bundle = Path(certifi.where()).read_text()
        end = "-----END CERTIFICATE-----"
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(bundle[: bundle.index(end) + len(end)] + "\n")
    return path


def tethered(module: str, *args: str) -> list[str]:
    """The command that runs a Python module of this interpreter, ending with the process that
    started it (freight/tether.py): `freight up`, `freight server` or `freight worker` killed
    with -9 leaves none of its processes behind, as they run in sessions of their own."""
    return [sys.executable, "-m", "freight.tether", str(os.getpid()), module, *args]


def prefect_command(*args: str) -> list[str]:
    return tethered("prefect", *args)


# A process that dies more often than this within RESTART_WINDOW seconds stops the stack.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
# The processes of a worker host.
WORKER_PROCESSES = ("forkserver", "worker")
# Stopped in this order: what reports to the Prefect server first, the databases last.
STOP_LAST = ("server", "db")


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # How each process was started (argv, and user/group arguments), to start it again.
    commands: dict[str, tuple[list[str], dict[str, Any]]] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    # This host's worker (fork server, Prefect worker): one that keeps dying is left down, and
    # the control plane beside it goes on.
    worker_processes: set[str] = field(default_factory=set)
    given_up: set[str] = field(default_factory=set)

    @property
    def ui_url(self) -> str:
        return self.settings.prefect_api_url.removesuffix("/api")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def start_process(self, name: str, argv: list[str], **identity: Any) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **identity,
        )
        self.processes[name] = process
        self.commands[name] = (argv, identity)
        return process

    def run(self, *argv: str) -> None:
        result = subprocess.run(
            argv, env=self.env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{result.stdout}{result.stderr}")

    def wait_for(self, name: str, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / f'{name}.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not {what} after {timeout}s")
            time.sleep(0.05)

    def wait_for_socket(self, name: str, path: Path, timeout: float = 60) -> None:
        self.wait_for(name, path.exists, f"listening on {path}", timeout)

    def wait_healthy(self, name: str, url: str, timeout: float = 120) -> None:
        """Wait until the process answers 200 at url."""

        def healthy() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_for(name, healthy, f"healthy at {url}", timeout)

    def limit_queue(self, name: str, limit: int | None) -> None:
        """Create the work queue with a concurrency limit (None: none), or set the limit if
        it exists."""
        if self._queue_request("post", "", {"name": name, "concurrency_limit": limit}) == 409:
            self._queue_request("patch", f"/{name}", {"concurrency_limit": limit})

    def make_queue(self, name: str) -> None:
        """Create the work queue unless it exists (its limit, if it has one, stays)."""
        self._queue_request("post", "", {"name": name})

    def _queue_request(
        self, method: str, path: str, body: dict[str, Any], timeout: float = 60
    ) -> int:
        """A request to the pool's queues; its status (409: the queue exists)."""
        url = f"{self.settings.prefect_api_url}/work_pools/{WORK_POOL}/queues{path}"
        user, _, password = prefect_auth(self.settings).partition(":")
        deadline = time.monotonic() + timeout
        # Prefect answers 503 while its database is busy (as it may be just after start), and a
        # worker host may start before its control plane.
        while True:
            try:
                response = httpx.request(method, url, json=body, auth=(user, password), timeout=30)
            except httpx.TransportError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Prefect's API at {url} cannot be reached: {exc}") from exc
            else:
                if response.status_code == 409:
                    return 409
                if response.status_code != 503 or time.monotonic() > deadline:
                    response.raise_for_status()
                    return response.status_code
            time.sleep(0.5)

    def supervise(
        self,
        stop: threading.Event,
        say: Callable[[str], None] = lambda line: None,
        *,
        keep_down: Container[str] = (),
    ) -> None:
        """Start again any process that died (but those named in `keep_down`), until `stop` is
        set. Raises RuntimeError naming a process that keeps dying."""
        while not stop.wait(0.5):
            for name, process in list(self.processes.items()):
                code = process.poll()
                if code is None or name in keep_down or name in self.given_up:
                    continue
                now = time.monotonic()
                recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW]
                if len(recent) >= MAX_RESTARTS:
                    problem = (
                        f"{name} exited {len(recent) + 1} times within {RESTART_WINDOW:.0f}s "
                        f"(last status {code}); see {self.log_dir / f'{name}.log'}"
                    )
                    if name in self.worker_processes and len(self.processes) > len(
                        self.worker_processes
                    ):
                        self.given_up.add(name)
                        say(f"{problem}; left down, the control plane goes on")
                        continue
                    raise RuntimeError(problem)
                self.restarts[name] = [*recent, now]
                say(f"{name} exited with status {code}; starting it again")
                argv, identity = self.commands[name]
                self.start_process(name, argv, **identity)

    def stop(self, grace: float = 20) -> None:
        """Stop flow runs and worker first (they need the server to report), then the server,
        then the database."""
        _terminate([p for n, p in self.processes.items() if n not in STOP_LAST], grace)
        if "server" in self.processes:
            _terminate([self.processes["server"]], grace)
        if "db" in self.processes:
            # PostgreSQL's fast shutdown: clients are disconnected, the data written out (its
            # SIGTERM would wait for every client to leave first).
            _terminate([self.processes["db"]], grace, signum=signal.SIGINT, whole_tree=False)
        self.processes.clear()


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _terminate(
    processes: list[subprocess.Popen[bytes]],
    grace: float,
    *,
    signum: signal.Signals = signal.SIGTERM,
    whole_tree: bool = True,
) -> None:
    roots = {p.pid for p in processes if p.poll() is None}
    tree = procs.descendants(roots)
    _signal_all(tree if whole_tree else roots, signum)
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
    settings: Settings,
    *,
    control_plane: bool = True,
    worker: bool = True,
    extra_env: Mapping[str, str] | None = None,
    prepare: Callable[[], None] = lambda: None,
    say: Callable[[str], None] = lambda line: None,
) -> Iterator[Stack]:
    """Start what this host runs, and stop all of it on exit.

    The control plane: the database (embedded, if Freight's or Prefect's is), its migrations,
    `prepare` (the catalogue, the first key), the Prefect server, work pool and deployments,
    the API and the reconciler. A worker: the fork server and a Prefect worker named after
    the host, taking up to FREIGHT_WORKER_LIMIT runs (on one machine, FREIGHT_CONCURRENT_DEPLOYS
    for the worker and the API's launcher together).
    """
    log_dir = settings.home.resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = prefect_env(
        settings, forkserver=worker, embedded_db=control_plane and settings.uses_embedded_db
    ) | dict(extra_env or {})
    stack = Stack(
        settings=settings,
        env=env,
        log_dir=log_dir,
        worker_processes=set(WORKER_PROCESSES) if worker else set(),
    )
    # This process reaches the embedded database too (migrations, the catalogue, callers').
    earlier = os.environ.get("PGPASSFILE")
    if "PGPASSFILE" in stack.env:
        os.environ["PGPASSFILE"] = stack.env["PGPASSFILE"]
    try:
        if control_plane:
            _start_control_plane(stack, prepare, say, one_machine=worker)
        if worker:
            _start_worker(stack, limit=None if control_plane else settings.worker_limit)
        if control_plane:
            stack.start_process("api", tethered("freight.api"))
            stack.start_process("reconciler", tethered("freight.reconcile"))
            stack.wait_healthy("api", f"{stack.api_url}/health")
        yield stack
    finally:
        stack.stop()
        if earlier is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = earlier


def _start_control_plane(
    stack: Stack, prepare: Callable[[], None], say: Callable[[str], None], *, one_machine: bool
) -> None:
    settings = stack.settings
    if settings.uses_embedded_db:
        _start_database(stack, say)
    upgrade(settings.database_url)
    prepare()
    record_control_plane(settings)
    stack.start_process("server", prefect_command("server", "start"))
    stack.wait_healthy("server", f"{settings.prefect_api_url}/health")
    stack.run(
        *prefect_command("work-pool", "create", WORK_POOL, "--type", "process", "--overwrite")
    )
    # One machine: its worker and the API's launcher share one limit, the queue's. Several
    # hosts: each worker's own limit; a limit on the queue would cap them all together.
    stack.limit_queue(DEFAULT_WORK_QUEUE, settings.concurrent_deploys if one_machine else None)
    stack.run(
        *prefect_command(
            "deploy", "--all", "--no-prompt", "--prefect-file", str(PROJECT_ROOT / "prefect.yaml")
        )
    )


def _start_worker(stack: Stack, *, limit: int | None) -> None:
    socket_path = Path(stack.env[forkclient.SOCKET_ENV])
    stack.start_process("forkserver", tethered("freight.forkserver", str(socket_path)))
    stack.wait_for_socket("forkserver", socket_path)
    argv = prefect_command(
        "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name",
        stack.settings.host_name,
    )  # fmt: skip
    # A worker polling a queue that does not exist yet would get no run at all (Prefect answers
    # its poll 404), and one polling every queue would take those meant for other networks.
    for queue in (FLOWS_QUEUE, *stack.settings.worker_queues):
        stack.make_queue(queue)
        argv += ["--work-queue", queue]
    if limit is not None:
        argv += ["--limit", str(limit)]
    stack.start_process("worker", argv)


def record_control_plane(settings: Settings) -> None:
    """The version this control plane runs: workers of another one take no runs."""
    from freight.db import get_engine, session_scope
    from freight.service import workers

    with session_scope(get_engine(settings.database_url)) as session:
        workers.record_control_plane(session, settings.host_name)


def _start_database(stack: Stack, say: Callable[[str], None]) -> None:
    from freight.embedded_db import EmbeddedDatabase

    database = EmbeddedDatabase(
        stack.settings.embedded_db_dir, stack.settings.db_port, passfile(stack.settings)
    )
    done = database.prepare()
    if done:
        say(done)
    stack.start_process("db", database.command(), **database.identity())
    stack.wait_for("db", database.ready, f"accepting connections on {database.port}", 60)
    secured = database.require_password()
    if secured:
        say(secured)
    database.create_databases()
