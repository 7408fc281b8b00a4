"""Deploy latency, throughput and memory on the `make up` topology (SQLite, one process worker).

Run by hand:  .venv/bin/python bench/deploys.py  [--deploys 20] [--burst 100] [--envs 20]
Prints a markdown report; paste it into BENCHMARKS.md with the command and machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, select

from freight import procs
from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, LogChunk, get_engine, session_scope
from freight.db.migrate import upgrade
from freight.demo import ensure_demo_repo
from freight.orchestrator import PrefectOrchestrator
from freight.service import apps, deploys
from freight.settings import Settings
from freight.stack import running_stack

# Prints its start time, a timed line every 0.1 s for 2 s, and its end time.
TIMED = (
    'echo "start $(date +%s.%N)"; '
    'for i in $(seq 1 20); do echo "line $i $(date +%s.%N)"; sleep 0.1; done; '
    'echo "end $(date +%s.%N)"'
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def memory_mb(pids: set[int], field: str) -> float:
    """Sum of one /proc/PID/smaps_rollup field: Rss, or Pss (shared pages split among sharers,
    the honest figure for processes forked from one warm interpreter)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wait_for(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        time.sleep(0.01)


class Bench:
    def __init__(self, settings: Settings, orchestrator: PrefectOrchestrator, repo: Path) -> None:
        self.settings = settings
        self.engine: Engine = get_engine(settings.database_url)
        self.orchestrator = orchestrator
        self.repo = repo

    def app(self, name: str, envs: list[str], command: str) -> None:
        spec = AppSpec.model_validate(
            {
                "name": name,
                "repository": str(self.repo),
                "provider": {"type": "shell", "command": command},
                "environments": {env: {"default_ref": "main"} for env in envs},
            }
        )
        with session_scope(self.engine) as session:
            apps.save_app(session, spec, source=AppSource.API)

    def trigger(self, app: str, env: str) -> int:
        with session_scope(self.engine) as session:
            return deploys.queue_deploy(
                session,
                self.orchestrator,
                app=app,
                environment=env,
                user="bench",
                workspace_root=self.settings.workspaces,
            ).id

    def chunks(self, deploy_id: int) -> list[str]:
        with session_scope(self.engine) as session:
            return list(
                session.scalars(
                    select(LogChunk.text)
                    .where(LogChunk.deploy_id == deploy_id)
                    .order_by(LogChunk.offset)
                )
            )

    def deploy(self, deploy_id: int) -> Deploy:
        with session_scope(self.engine) as session:
            return deploys.get_deploy(session, deploy_id)


def latency(bench: Bench, count: int, pause: float) -> dict[str, list[float]]:
    bench.app("timed", ["staging"], TIMED)
    first_line, overhead, line_delay, handed = [], [], [], []
    for _ in range(count):
        seen: dict[str, float] = {}
        t0 = time.time()
        deploy_id = bench.trigger("timed", "staging")
        handed.append(time.time() - t0)
        while True:
            now = time.time()
            for line in "".join(bench.chunks(deploy_id)).splitlines():
                if not line.startswith(">> ") and line not in seen:
                    seen[line] = now
            deploy = bench.deploy(deploy_id)
            if DeployStatus(deploy.status).is_final:
                break
            time.sleep(0.01)
        assert deploy.status == DeployStatus.FINISHED, deploy.reason
        time.sleep(pause)
        printed = {line: float(line.split()[-1]) for line in seen}
        start = min(printed.values())
        end = max(printed.values())
        first_line.append(min(seen.values()) - t0)
        assert deploy.date_finished
        overhead.append(deploy.date_finished.timestamp() - t0 - (end - start))
        line_delay.extend(seen[line] - printed[line] for line in seen)
    return {"first": first_line, "overhead": overhead, "line": line_delay, "handed": handed}


def burst(bench: Bench, total: int, app_envs: int) -> tuple[float, int, int]:
    names = [(f"burst{i // 2}", ("staging", "production")[i % 2]) for i in range(app_envs)]
    for app in {n for n, _ in names}:
        bench.app(app, ["staging", "production"], "echo {number}; sleep 1")
    t0 = time.time()
    # Eight clients at once, like a burst of API calls; each creates and hands over its deploys.
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda i: bench.trigger(*names[i % app_envs]), range(total)))
    wait_for(lambda: all(DeployStatus(bench.deploy(i).status).is_final for i in ids), 3600)
    drained = time.time() - t0
    done = [bench.deploy(i) for i in ids]
    lost = sum(d.status != DeployStatus.FINISHED for d in done)
    disorder = 0
    for app, env in names:
        own = sorted(
            (d for d in done if d.app.name == app and d.environment == env), key=lambda d: d.number
        )
        for a, b in itertools.pairwise(own):
            if not (a.date_finished and b.date_started and b.date_started >= a.date_finished):
                disorder += 1
    return drained, lost, disorder


def memory(bench: Bench, stack_pids: dict[str, int]) -> dict[str, str]:
    def tree(names: list[str]) -> set[int]:
        return procs.descendants({stack_pids[n] for n in names})

    def both(pids: set[int]) -> str:
        return f"RSS {memory_mb(pids, 'Rss'):.0f} MB, PSS {memory_mb(pids, 'Pss'):.0f} MB"

    idle = {f"{name} idle": both(procs.descendants({pid})) for name, pid in stack_pids.items()}
    bench.app("mem", ["staging"], "echo running; sleep 8")
    # Flow-run processes are children of the fork server; the worker's client waits for each.
    runners = ["worker", "forkserver"]
    before = tree(runners)
    deploy_id = bench.trigger("mem", "staging")
    wait_for(lambda: "running" in "".join(bench.chunks(deploy_id)), 120)
    per_deploy = both(tree(runners) - before)
    wait_for(lambda: DeployStatus(bench.deploy(deploy_id).status).is_final, 120)
    return {**idle, "per running deploy": per_deploy}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deploys", type=int, default=20, help="latency deploys (0: skip)")
    parser.add_argument("--burst", type=int, default=100, help="burst deploys (0: skip)")
    parser.add_argument("--envs", type=int, default=20, help="app/envs the burst spreads over")
    parser.add_argument(
        "--pause",
        type=float,
        default=0,
        help="seconds between latency deploys (0: back to back, as a queue drains)",
    )
    parser.add_argument("--concurrent", type=int, default=8, help="FREIGHT_CONCURRENT_DEPLOYS")
    parser.add_argument("--prefect-db", default="", help="FREIGHT_PREFECT_DATABASE_URL")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="freight-bench-"))
    settings = Settings(
        home=home,
        prefect_api_url="http://127.0.0.1:4391/api",
        concurrent_deploys=args.concurrent,
        prefect_database_url=args.prefect_db,
    )
    upgrade(settings.database_url)
    repo = home / "repo"
    ensure_demo_repo(repo)
    with (
        running_stack(settings) as stack,
        temporary_settings({PREFECT_API_URL: settings.prefect_api_url}),
        PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
    ):
        bench = Bench(settings, orchestrator, repo)
        time.sleep(5)  # let the worker finish its start-up before timing anything
        print(
            f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, {vars(args)}\n",
            flush=True,
        )
        mem = memory(bench, {name: p.pid for name, p in stack.processes.items()})
        print("| process | memory |\n|---|---|")
        for name, value in mem.items():
            print(f"| {name} | {value} |", flush=True)
        if args.deploys:
            report_latency(latency(bench, args.deploys, args.pause))
        if args.burst:
            drained, lost, disorder = burst(bench, args.burst, args.envs)
            print(
                f"\n{args.burst} deploys over {args.envs} app/envs: drained in {drained:.1f} s, "
                f"{args.burst / drained * 60:.1f} deploys/min, "
                f"{lost} not finished, {disorder} out of order",
                flush=True,
            )


def report_latency(lat: dict[str, list[float]]) -> None:
    print("\n| measure | p50 | p95 | n |\n|---|---|---|---|")
    for label, key in (
        ("trigger → handed to Prefect (create, fetch, flow run made)", "handed"),
        ("trigger → first command line readable in the Freight DB", "first"),
        ("deploy time minus the command's own time", "overhead"),
        ("output line → readable in the Freight DB", "line"),
    ):
        values = lat[key]
        p50, p95 = ms(statistics.median(values)), ms(percentile(values, 0.95))
        print(f"| {label} | {p50} | {p95} | {len(values)} |", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()
