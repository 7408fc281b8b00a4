"""One poll-vcs cycle over many app/envs on many local repositories: wall time and CPU.

Run by hand, from the project root:  .venv/bin/python -m bench.poll  [--repos 100] [--envs 2]
(Prefect is not involved: the hand-overs go to the test suite's recording orchestrator.)
Prints a markdown report; paste it into BENCHMARKS.md with the command and machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, make_engine, session_scope
from freight.db.migrate import upgrade
from freight.execution import autodeploy
from freight.execution.handover import HandOver
from freight.service import apps, deploys
from freight.settings import Settings
from tests.factories import RecordingOrchestrator

ENVS = ("staging", "qa", "canary", "production")


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_repo(path: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    (path / "README").write_text("hello\n")
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "first"], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--envs", type=int, default=2, choices=range(1, len(ENVS) + 1))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="freight-bench-poll-"))
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'freight.db'}", allow_local_repositories=True
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    for i in range(args.repos):
        make_repo(home / "repos" / f"r{i:03d}")
    with session_scope(engine) as session:
        for i in range(args.repos):
            spec = AppSpec.model_validate(
                {
                    "name": f"app{i:03d}",
                    "repository": str(home / "repos" / f"r{i:03d}"),
                    "provider": {"type": "shell", "command": "true"},
                    "environments": {
                        env: {"default_ref": "main", "auto_deploy": {"branch": "main"}}
                        for env in ENVS[: args.envs]
                    },
                }
            )
            apps.save_app(session, spec, source=AppSource.API)
    handover = HandOver(
        engine,
        RecordingOrchestrator(),
        workspace_root=settings.workspaces,
        git=settings.git_access(),
    )
    print(
        f"Run {datetime.now().isoformat(timespec='minutes')} on {platform.node()}, "
        f"{os.cpu_count()} cores; {args.repos} repositories, {args.repos * args.envs} app/envs\n"
    )
    print("| cycle | wall | CPU | outcome |\n|---|---|---|---|")
    with httpx.Client() as client:
        context = autodeploy.PollContext(
            client=client, urls=settings.service_urls(), secrets_from={}
        )

        def cycle(label: str) -> None:
            t0, c0 = time.perf_counter(), cpu()
            outcomes = autodeploy.poll(handover, context)
            wall, used = time.perf_counter() - t0, cpu() - c0
            states: dict[str, int] = {}
            for outcome in outcomes:
                states[str(outcome.state)] = states.get(str(outcome.state), 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
            print(f"| {label} | {wall:.2f} s | {used:.2f} s | {summary} |", flush=True)

        cycle("first: every env has a new sha (mirrors cloned, deploys queued)")
        cycle("again: deploys under way")
        with session_scope(engine) as session:
            for deploy in session.query(Deploy).filter(Deploy.status == DeployStatus.IN_PROGRESS):
                deploys.mark_ended(session, deploy, DeployStatus.FINISHED, None)
        cycle("steady: everything up to date")


if __name__ == "__main__":
    main()
