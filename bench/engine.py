"""Freight's engine on the default `make up` stack (the embedded PostgreSQL for Freight and
Prefect), beside plain Prefect running the same command in the same run.

Run by hand, from the project root (as root or not):
    .venv/bin/python -m bench.engine [--quiet 15] [--burst 60] [--faults 3]

Measures, and prints as markdown for BENCHMARKS.md:
- quiet deploys, one at a time, Freight and plain Prefect interleaved: trigger -> first line of
  the command, and overhead (trigger -> recorded as ended, minus the command's own time);
  Freight's line -> readable (the command prints a line, the API can serve it);
- a burst of deploys over 12 app/environments from 8 clients: drain rate, lost, out of order;
  the same number of plain Prefect runs created at once;
- recovery after faults (kill -9 of a runner, of the reconciler with a runner, of the API amid a
  burst; SIGSTOP of a runner): fault -> the blocked environment's next deploy starts;
- the idle memory (PSS) of each process of the stack.
The plain alternative is bench/plain_flow.py: a three-task flow on a process worker polling
every second (a fresh interpreter per run, as Prefect's process worker starts them).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from uuid import UUID

import httpx
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, select

from freight import procs
from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, LogChunk, get_engine, session_scope
from freight.orchestrator import PrefectOrchestrator
from freight.service import apps
from freight.settings import Settings
from freight.stack import PROJECT_ROOT, Stack, prefect_auth, prefect_command, running_stack

KEY = "bench-admin-key"
# Prints its start, ten lines 0.1 s apart and its end, each with the time it printed it.
TIMED = (
    'echo "start $(date +%s.%N)"; '
    'for i in $(seq 1 10); do echo "line $i $(date +%s.%N)"; sleep 0.1; done; '
    'echo "end $(date +%s.%N)"'
)
SHORT = "echo {number}; sleep 0.3"
LONG = 'echo started; if [ -n "$FREIGHT_PARAM_HOLD" ]; then sleep 600; fi'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.01)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def git_repo(path: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    path.mkdir(parents=True)
    (path / "README").write_text("hello\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()


class Bench:
    def __init__(self, stack: Stack, settings: Settings, orchestrator: PrefectOrchestrator):
        self.stack = stack
        self.settings = settings
        self.orchestrator = orchestrator
        self.engine: Engine = get_engine(settings.database_url)
        self.home = settings.home
        self.repo = self.home / "repo"
        self.sha = git_repo(self.repo)

    def app(self, command: str) -> str:
        name = f"b{uuid.uuid4().hex[:8]}"
        spec = AppSpec.model_validate(
            {
                "name": name,
                "repository": str(self.repo),
                "provider": {"type": "shell", "command": command},
                "environments": {"staging": {"default_ref": "main"}, "production": {}},
            }
        )
        with session_scope(self.engine) as session:
            apps.save_app(session, spec, source=AppSource.API)
        return name

    def post(self, app: str, env: str = "staging", **params: str) -> int | None:
        try:
            response = httpx.post(
                f"{self.stack.api_url}/api/0/deploys/",
                json={"app": app, "env": env, "user": "bench", "params": params},
                headers={"Authorization": f"Key {KEY}"},
                timeout=120,
            )
        except httpx.HTTPError:
            return None
        response.raise_for_status()
        return int(response.json()["id"])

    def deploy(self, deploy_id: int) -> Deploy:
        with session_scope(self.engine) as session:
            return session.get_one(Deploy, deploy_id)

    def lines(self, deploy_id: int) -> list[str]:
        with session_scope(self.engine, read_only=True) as session:
            text = "".join(
                session.scalars(
                    select(LogChunk.text)
                    .where(LogChunk.deploy_id == deploy_id)
                    .order_by(LogChunk.offset)
                )
            )
        return text.splitlines()

    def ended(self, deploy_id: int) -> bool:
        return DeployStatus(self.deploy(deploy_id).status).is_final


# -- plain Prefect --------------------------------------------------------------------------


@contextmanager
def plain_worker(stack: Stack) -> Iterator[None]:
    """A work pool, a deployment of bench/plain_flow.py and a process worker polling every
    second, as a team using Prefect alone would have them."""
    stack.run(*prefect_command("work-pool", "create", "plain", "--type", "process", "--overwrite"))
    stack.run(
        *prefect_command(
            "deploy",
            "bench/plain_flow.py:plain",
            "--name",
            "plain",
            "--pool",
            "plain",
            "--job-variable",
            f"working_dir={PROJECT_ROOT}",
            "--no-prompt",
        )
    )
    env = {**stack.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = (stack.log_dir / "plain-worker.log").open("ab")
    worker = subprocess.Popen(
        prefect_command("worker", "start", "--pool", "plain", "--type", "process"),
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def plain_run(bench: Bench, command: str, name: str = "plain-deploy/plain") -> UUID:
    client = bench.orchestrator.client
    deployment = client.read_deployment_by_name(name)
    run = client.create_flow_run_from_deployment(
        deployment.id,
        parameters={"repository": str(bench.repo), "sha": bench.sha, "command": command},
    )
    return run.id


def plain_measure(bench: Bench, t0: float, run_id: UUID) -> tuple[float, float]:
    """(trigger -> first line, overhead) of a plain run, from its logs and states."""
    client = bench.orchestrator.client

    def done() -> bool:
        state = client.read_flow_run(run_id).state
        return state is not None and state.is_final()

    wait_for(done, 300, "the plain run")
    run = client.read_flow_run(run_id)
    assert run.state and run.state.type == StateType.COMPLETED, run.state
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    printed = [float(rec.message.split()[-1]) for rec in logs if rec.message.startswith("start ")]
    printed += [float(rec.message.split()[-1]) for rec in logs if rec.message.startswith("end ")]
    start, end = min(printed), max(printed)
    assert run.state.timestamp
    return start - t0, run.state.timestamp.timestamp() - t0 - (end - start)


# -- Freight --------------------------------------------------------------------------------


def freight_measure(bench: Bench, t0: float, deploy_id: int) -> tuple[float, float, list[float]]:
    """(trigger -> first line, overhead, line -> readable delays) of a Freight deploy."""
    seen: dict[str, float] = {}
    while True:
        now = time.time()
        for line in bench.lines(deploy_id):
            if not line.startswith(">> ") and line not in seen:
                seen[line] = now
        if bench.ended(deploy_id):
            break
        time.sleep(0.01)
    deploy = bench.deploy(deploy_id)
    assert deploy.status == DeployStatus.FINISHED and deploy.date_finished, deploy.reason
    printed = {line: float(line.split()[-1]) for line in seen}
    start, end = min(printed.values()), max(printed.values())
    first = min(printed.values()) - t0
    overhead = deploy.date_finished.timestamp() - t0 - (end - start)
    return first, overhead, [seen[line] - printed[line] for line in seen]


def quiet(bench: Bench, count: int) -> None:
    app = bench.app(TIMED)
    results: dict[str, list[float]] = {k: [] for k in ("ff", "fo", "fl", "pf", "po")}
    for _ in range(count):
        t0 = time.time()
        deploy_id = bench.post(app)
        assert deploy_id
        first, overhead, lines = freight_measure(bench, t0, deploy_id)
        results["ff"].append(first)
        results["fo"].append(overhead)
        results["fl"].extend(lines)
        time.sleep(1)
        t0 = time.time()
        run_id = plain_run(bench, TIMED)
        first, overhead = plain_measure(bench, t0, run_id)
        results["pf"].append(first)
        results["po"].append(overhead)
        time.sleep(1)
    print(f"\n### Quiet: {count} deploys each, interleaved\n")
    print("| measure | Freight p50 | Freight p95 | plain Prefect p50 | plain p95 | ratio p50 |")
    print("|---|---|---|---|---|---|")
    for label, f, p in (
        ("trigger -> first line", "ff", "pf"),
        ("overhead (wall - command)", "fo", "po"),
    ):
        fp50, pp50 = percentile(results[f], 0.5), percentile(results[p], 0.5)
        print(
            f"| {label} | {fp50:.2f} s | {percentile(results[f], 0.95):.2f} s | {pp50:.2f} s | "
            f"{percentile(results[p], 0.95):.2f} s | {fp50 / pp50:.2f} |"
        )
    lines = results["fl"]
    print(
        f"| line -> readable (Freight) | {percentile(lines, 0.5) * 1000:.0f} ms | "
        f"{percentile(lines, 0.95) * 1000:.0f} ms | | | |",
        flush=True,
    )


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (all processes, this one included)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def burst(bench: Bench, total: int) -> None:
    names = [bench.app(SHORT) for _ in range(6)]
    pairs = [(app, env) for app in names for env in ("staging", "production")]
    c0 = busy_cpu()
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: bench.post(*pairs[i % len(pairs)]), range(total)))
    accepted = [i for i in ids if i is not None]
    wait_for(lambda: all(bench.ended(i) for i in accepted), 3600, "the burst")
    drained = time.time() - t0
    done = [bench.deploy(i) for i in accepted]
    lost = total - sum(d.status == DeployStatus.FINISHED for d in done)
    disorder = 0
    for app, env in pairs:
        own = sorted(
            (d for d in done if d.app.name == app and d.environment == env), key=lambda d: d.number
        )
        for a, b in itertools.pairwise(own):
            if not (a.date_finished and b.date_started and b.date_started >= a.date_finished):
                disorder += 1
    cpu = busy_cpu() - c0
    c1 = busy_cpu()
    t1 = time.time()
    plain_ids = [plain_run(bench, "echo plain; sleep 0.3") for _ in range(total)]
    client = bench.orchestrator.client

    def plain_done() -> bool:
        return all(
            (state := client.read_flow_run(run_id).state) is not None and state.is_final()
            for run_id in plain_ids
        )

    wait_for(plain_done, 3600, "the plain burst")
    plain_drained = time.time() - t1
    plain_cpu = busy_cpu() - c1
    print(f"\n### Burst: {total} deploys over {len(pairs)} app/environments, 8 clients\n")
    print(
        "| | drained in | per minute | machine CPU per deploy | lost | out of order |\n"
        "|---|---|---|---|---|---|"
    )
    print(
        f"| Freight | {drained:.0f} s | {total / drained * 60:.1f} | {cpu / total:.2f} s "
        f"| {lost} | {disorder} |\n"
        f"| plain Prefect (no per-env queue) | {plain_drained:.0f} s | "
        f"{total / plain_drained * 60:.1f} | {plain_cpu / total:.2f} s | | |\n"
        f"| ratio Freight / plain | | {(total / drained) / (total / plain_drained):.2f} | "
        f"{(cpu / total) / (plain_cpu / total):.2f} | | |",
        flush=True,
    )


def _blocked_pair(bench: Bench) -> tuple[int, int]:
    """A deploy that holds its app/env (its command waits) and one queued behind it."""
    app = bench.app(LONG)
    held = bench.post(app, HOLD="yes")
    after = bench.post(app)
    assert held and after
    wait_for(lambda: "started" in bench.lines(held), 120, "the held deploy")
    wait_for(lambda: bench.deploy(held).runner_pid, 60, "its runner")
    return held, after


def _starts_after(bench: Bench, deploy_id: int, fault_at: float) -> float:
    wait_for(lambda: bench.deploy(deploy_id).date_started, 300, "the next deploy")
    began = bench.deploy(deploy_id).date_started
    assert began
    return began.timestamp() - fault_at


def runner_killed(bench: Bench) -> float:
    held, after = _blocked_pair(bench)
    runner = bench.deploy(held).runner_pid
    assert runner
    at = time.time()
    os.kill(runner, signal.SIGKILL)
    return _starts_after(bench, after, at)


def reconciler_and_runner_killed(bench: Bench) -> float:
    held, after = _blocked_pair(bench)
    runner = bench.deploy(held).runner_pid
    assert runner
    at = time.time()
    os.kill(bench.stack.processes["reconciler"].pid, signal.SIGKILL)
    os.kill(runner, signal.SIGKILL)
    return _starts_after(bench, after, at)


def runner_stopped(bench: Bench) -> float:
    held, after = _blocked_pair(bench)
    runner = bench.deploy(held).runner_pid
    assert runner
    at = time.time()
    os.kill(runner, signal.SIGSTOP)
    try:
        return _starts_after(bench, after, at)
    finally:
        os.kill(runner, signal.SIGCONT)


def api_killed_amid_a_burst(bench: Bench) -> float:
    names = [bench.app(SHORT) for _ in range(2)]
    pairs = [(app, env) for app in names for env in ("staging", "production")] * 4
    killed_at: list[float] = []

    def kill_api() -> None:
        time.sleep(1.0)
        killed_at.append(time.time())
        os.kill(bench.stack.processes["api"].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_api)
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda pair: bench.post(*pair), pairs))
    killer.join()
    wait_for(lambda: _healthy(f"{bench.stack.api_url}/health"), 60, "the API again")
    wait_for(
        lambda: all(DeployStatus(d.status).is_final for d in _deploys_of(bench, names)),
        600,
        "the burst after the API's death",
    )
    return _longest_wait(_deploys_of(bench, names), killed_at[0])


FAULTS: dict[str, Callable[[Bench], float]] = {
    "kill -9 of a runner": runner_killed,
    "kill -9 of the reconciler and a runner": reconciler_and_runner_killed,
    "SIGSTOP of a runner": runner_stopped,
    "kill -9 of the API amid a burst": api_killed_amid_a_burst,
}


def recovery(bench: Bench, rounds: int) -> None:
    """Fault -> the blocked environment's next deploy starts, for each kind of fault."""
    times: dict[str, list[float]] = {label: [] for label in FAULTS}
    for _ in range(rounds):
        for label, fault in FAULTS.items():
            times[label].append(fault(bench))
    everything = [t for values in times.values() for t in values]
    print(f"\n### Recovery: fault -> the blocked environment moves again ({rounds} rounds)\n")
    print("| fault | p50 | max |\n|---|---|---|")
    for label, values in times.items():
        print(f"| {label} | {percentile(values, 0.5):.1f} s | {max(values):.1f} s |")
    print(f"| all ({len(everything)}) p95 | {percentile(everything, 0.95):.1f} s | |", flush=True)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _deploys_of(bench: Bench, names: list[str]) -> list[Deploy]:
    from freight.db import App

    with session_scope(bench.engine) as session:
        return list(session.scalars(select(Deploy).join(App).where(App.name.in_(names))))


def _longest_wait(deploys: list[Deploy], fault_at: float) -> float:
    """The longest an app/env with work waiting sat still after the fault."""
    longest = 0.0
    queues: dict[tuple[int, str], list[Deploy]] = {}
    for deploy in deploys:
        queues.setdefault((deploy.app_id, deploy.environment), []).append(deploy)
    for queue in queues.values():
        queue.sort(key=lambda d: d.number)
        free = fault_at
        for deploy in queue:
            assert deploy.date_started and deploy.date_finished
            ready = max(free, deploy.date_created.timestamp())
            if deploy.date_started.timestamp() > fault_at:
                longest = max(longest, deploy.date_started.timestamp() - ready)
            free = deploy.date_finished.timestamp()
    return longest


def memory(stack: Stack) -> None:
    print("\n### Idle memory (PSS, shared pages split among sharers)\n")
    print("| process | PSS |\n|---|---|")
    total = 0.0
    for name, process in stack.processes.items():
        mb = pss_mb(procs.descendants({process.pid}))
        total += mb
        print(f"| {name} | {mb:.0f} MB |")
    print(f"| the whole stack | {total:.0f} MB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", type=int, default=15, help="quiet deploys (0: skip)")
    parser.add_argument("--burst", type=int, default=60, help="burst deploys (0: skip)")
    parser.add_argument("--faults", type=int, default=3, help="rounds of faults (0: skip)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="freight-bench-", dir="/tmp"))
    base.chmod(0o711)  # the embedded PostgreSQL runs as a user of its own under root
    api_port = free_port()
    settings = Settings(
        home=base / "home",
        db_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        api_key=KEY,
        allow_local_repositories=True,
    )
    stop = threading.Event()
    with running_stack(settings) as stack:
        supervisor = threading.Thread(target=stack.supervise, args=(stop,), daemon=True)
        supervisor.start()
        with (
            temporary_settings(
                {
                    PREFECT_API_URL: settings.prefect_api_url,
                    PREFECT_API_AUTH_STRING: prefect_auth(settings),
                }
            ),
            PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
            plain_worker(stack),
        ):
            bench = Bench(stack, settings, orchestrator)
            time.sleep(10)  # the stack settles (the first scheduled flows run)
            load = os.getloadavg()
            print(
                f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
                f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                f"Python {platform.python_version()}, {' '.join(sys.argv[1:]) or 'defaults'}",
                flush=True,
            )
            memory(stack)
            if args.quiet:
                quiet(bench, args.quiet)
            if args.burst:
                burst(bench, args.burst)
            if args.faults:
                recovery(bench, args.faults)
        stop.set()
        supervisor.join(10)
    print(f"\n(load average at the end: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
