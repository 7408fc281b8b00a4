"""Freight on several worker hosts: a control plane (`freight server`'s processes, the embedded
PostgreSQL for Freight and Prefect) and 1, 2, then 3 `freight worker --limit 4` on this machine,
each a process tree with a FREIGHT_HOME and host name of its own; beside it in the same run,
plain Prefect with as many process workers, each limited to 4 runs.

Run by hand, from the project root (as root or not):
    .venv/bin/python -m bench.workers [--burst 60] [--workers 1,2,3] [--deaths 2]

Measures, and prints as markdown for BENCHMARKS.md:
- the same burst (deploys over 12 app/environments from 8 clients) with each number of
  workers: drain rate, lost, out of order, the load average while it drained, and the CPU
  seconds per deploy spent by the control plane's processes and by the workers' (each tree's
  own and its reaped children's); the same number of plain Prefect runs on as many workers;
- a worker host's death (kill -9 of its whole tree, its deploys' commands too) amid held
  deploys: death -> each of its deploys failed, and -> the next deploy of those environments
  started (on another host).
On two cores more workers cannot run faster: the ratio shows what a worker costs, not speed-up.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from bench.engine import (
    KEY,
    LONG,
    SHORT,
    Bench,
    free_port,
    plain_run,
    wait_for,
)
from freight import procs
from freight.db import DeployStatus
from freight.orchestrator import PrefectOrchestrator
from freight.settings import Settings
from freight.stack import (
    PROJECT_ROOT,
    Stack,
    passfile,
    prefect_auth,
    prefect_command,
    running_stack,
)

FREIGHT = str(Path(sys.executable).parent / "freight")
LIMIT = 4
CLOCK = os.sysconf("SC_CLK_TCK")


def tree_cpu(roots: set[int]) -> float:
    """CPU seconds of these processes and their descendants, with the children they reaped."""
    total = 0
    for pid in procs.descendants(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK


class Workers:
    """`freight worker` processes on this machine, as hosts of their own."""

    def __init__(self, bench: Bench, base: Path) -> None:
        self.bench = bench
        self.base = base
        # Enterable by the deploy user `freight worker` makes when run by root (its checkouts
        # are under each home).
        base.mkdir(mode=0o711)
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        settings = self.bench.settings
        home = self.base / name
        home.mkdir(parents=True, exist_ok=True)
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("FREIGHT_", "PREFECT_"))},
            "FREIGHT_HOME": str(home),
            "FREIGHT_HOST_NAME": name,
            "FREIGHT_DATABASE_URL": settings.database_url,
            "FREIGHT_PREFECT_API_URL": settings.prefect_api_url,
            "FREIGHT_PREFECT_AUTH": prefect_auth(settings),
            "FREIGHT_ALLOW_LOCAL_REPOSITORIES": "true",
            "PGPASSFILE": str(passfile(settings)),
        }

    def start(self, count: int) -> None:
        for number in range(1, count + 1):
            name = f"w{number}"
            log = (self.base / f"{name}.log").open("ab")
            self.running[name] = subprocess.Popen(
                [FREIGHT, "worker", "--limit", str(LIMIT)],
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def all_running() -> bool:
            response = httpx.get(
                f"{self.bench.stack.api_url}/api/0/workers/",
                headers={"Authorization": f"Key {KEY}"},
                timeout=10,
            )
            states = {w["name"]: w["state"] for w in response.json()}
            return all(states.get(name) == "running" for name in self.running)

        wait_for(all_running, 120, f"{count} workers to report")

    def pids(self) -> set[int]:
        return {p.pid for p in self.running.values() if p.poll() is None}

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # drains: nothing runs by now
        for process in self.running.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running.clear()

    def kill(self, name: str) -> None:
        """The host dies: every process of its tree at once (its commands too)."""
        process = self.running.pop(name)
        for pid in procs.descendants({process.pid}):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


@contextmanager
def plain_workers(stack: Stack, count: int) -> Iterator[None]:
    """Plain Prefect's alternative: a pool and `count` process workers limited to 4 runs each."""
    pool = f"plain{count}"
    stack.run(*prefect_command("work-pool", "create", pool, "--type", "process", "--overwrite"))
    stack.run(
        *prefect_command(
            "deploy", "bench/plain_flow.py:plain", "--name", f"plain{count}", "--pool", pool,
            "--job-variable", f"working_dir={PROJECT_ROOT}", "--no-prompt",
        )
    )  # fmt: skip
    env = {**stack.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    started = []
    for number in range(count):
        log = (stack.log_dir / f"plain-worker-{count}-{number}.log").open("ab")
        started.append(
            subprocess.Popen(
                prefect_command(
                    "worker", "start", "--pool", pool, "--type", "process",
                    "--limit", str(LIMIT), "--name", f"plain-{count}-{number}",
                ),
                env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )  # fmt: skip
    try:
        yield
    finally:
        for worker in started:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in started:
            worker.wait(30)


def loadavg_while(done: threading.Event, samples: list[float]) -> None:
    while not done.wait(5):
        samples.append(os.getloadavg()[0])


def burst(bench: Bench, workers: Workers, count: int, total: int) -> str:
    names = [bench.app(SHORT) for _ in range(6)]
    pairs = [(app, env) for app in names for env in ("staging", "production")]
    control = {p.pid for p in bench.stack.processes.values()}
    c0, w0 = tree_cpu(control), tree_cpu(workers.pids())
    loads: list[float] = []
    done = threading.Event()
    sampler = threading.Thread(target=loadavg_while, args=(done, loads), daemon=True)
    sampler.start()
    t0 = time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: bench.post(*pairs[i % len(pairs)]), range(total)))
    accepted = [i for i in ids if i is not None]
    wait_for(lambda: all(bench.ended(i) for i in accepted), 3600, "the burst")
    drained = time.time() - t0
    done.set()
    control_cpu = tree_cpu(control) - c0
    worker_cpu = tree_cpu(workers.pids()) - w0
    deploys = [bench.deploy(i) for i in accepted]
    lost = total - sum(d.status == DeployStatus.FINISHED for d in deploys)
    hosts = {d.runner_host for d in deploys}
    disorder = 0
    for app, env in pairs:
        own = sorted(
            (d for d in deploys if d.app.name == app and d.environment == env),
            key=lambda d: d.number,
        )
        for a, b in itertools.pairwise(own):
            if not (a.date_finished and b.date_started and b.date_started >= a.date_finished):
                disorder += 1
    load = max(loads) if loads else os.getloadavg()[0]
    # The same number of plain runs, on as many plain workers.
    with plain_workers(bench.stack, count):
        time.sleep(3)  # the workers' first poll
        deployment = f"plain-deploy/plain{count}"
        t1 = time.time()
        plain_ids = [plain_run(bench, "echo plain; sleep 0.3", deployment) for _ in range(total)]
        client = bench.orchestrator.client

        def plain_done() -> bool:
            return all(
                (state := client.read_flow_run(run_id).state) is not None and state.is_final()
                for run_id in plain_ids
            )

        wait_for(plain_done, 3600, "the plain burst")
        plain_drained = time.time() - t1
    rate, plain_rate = total / drained * 60, total / plain_drained * 60
    return (
        f"| {count} | {drained:.0f} s | {rate:.1f} | {plain_rate:.1f} | {rate / plain_rate:.2f} "
        f"| {control_cpu / total:.2f} s | {worker_cpu / total:.2f} s | {load:.2f} | {lost} "
        f"| {disorder} | {len(hosts)} |"
    )


def death(bench: Bench, workers: Workers) -> str:
    """A host dies holding deploys: how long until they fail, and their queues move."""
    held = []
    for _ in range(4):
        app = bench.app(LONG)
        for env in ("staging", "production"):
            first = bench.post(app, env, HOLD="yes")
            after = bench.post(app, env)
            assert first is not None and after is not None
            held.append((first, after))
    wait_for(
        lambda: all(bench.deploy(first).date_started for first, _ in held), 120, "held deploys"
    )
    by_host: dict[str, list[tuple[int, int]]] = {}
    for first, after in held:
        host = bench.deploy(first).runner_host
        assert host
        by_host.setdefault(host, []).append((first, after))
    victim, lost = max(by_host.items(), key=lambda item: len(item[1]))
    killed_at = time.time()
    workers.kill(victim)
    wait_for(
        lambda: all(bench.deploy(after).date_started for _, after in lost), 300, "queues to move"
    )
    failed = [bench.deploy(first) for first, _ in lost]
    assert all(d.status == DeployStatus.FAILED for d in failed), [d.reason for d in failed]
    to_failed = max(d.date_finished.timestamp() for d in failed if d.date_finished) - killed_at
    moved = [bench.deploy(after) for _, after in lost]
    to_moved = max(d.date_started.timestamp() for d in moved if d.date_started) - killed_at
    elsewhere = {d.runner_host for d in moved}
    for first, after in held:  # the rest end, for the next round
        for deploy_id in (first, after):
            httpx.put(
                f"{bench.stack.api_url}/api/0/deploys/{deploy_id}/",
                json={"status": "cancelled"},
                headers={"Authorization": f"Key {KEY}"},
                timeout=30,
            )
    wait_for(lambda: all(bench.ended(i) for pair in held for i in pair), 120, "the cancels")
    return (
        f"| {victim} ({len(lost)} held deploys) | {to_failed:.1f} s | {to_moved:.1f} s "
        f"| {', '.join(sorted(h for h in elsewhere if h))} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--burst", type=int, default=60, help="deploys in each burst")
    parser.add_argument("--workers", default="1,2,3", help="numbers of workers to run it with")
    parser.add_argument("--deaths", type=int, default=2, help="host deaths (with 3 workers)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="freight-bench-workers-", dir="/tmp"))
    base.chmod(0o711)  # the embedded PostgreSQL runs as a user of its own under root
    api_port = free_port()
    settings = Settings(
        home=base / "control",
        db_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        api_key=KEY,
        allow_local_repositories=True,
        host_name="control",
    )
    stop = threading.Event()
    with running_stack(settings, worker=False) as stack:
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
        ):
            bench = Bench(stack, settings, orchestrator)
            workers = Workers(bench, base / "hosts")
            load = os.getloadavg()
            print(
                f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
                f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                f"Python {platform.python_version()}, {' '.join(sys.argv[1:]) or 'defaults'}",
                flush=True,
            )
            print(
                f"\n### Burst: {args.burst} deploys over 12 app/environments, 8 clients, "
                f"workers limited to {LIMIT} each\n\n"
                "| workers | Freight drained in | per minute | plain per minute | ratio "
                "| control plane CPU per deploy | workers' CPU per deploy | peak load (1 min) "
                "| lost | out of order | hosts used |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|",
                flush=True,
            )
            for count in (int(n) for n in args.workers.split(",")):
                workers.start(count)
                time.sleep(5)  # the scheduled flows of a new worker settle
                print(burst(bench, workers, count, args.burst), flush=True)
                workers.stop()
            if args.deaths:
                print(
                    "\n### A worker host killed (kill -9 of its whole tree) with 3 workers\n\n"
                    "| host killed | -> its deploys failed | -> their queues moved on "
                    "| moved to |\n|---|---|---|---|",
                    flush=True,
                )
                for _ in range(args.deaths):
                    workers.start(3)
                    print(death(bench, workers), flush=True)
                    workers.stop()
        stop.set()
        supervisor.join(10)
    print(f"\n(load average at the end: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
