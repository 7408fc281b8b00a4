"""Deploys through the real topology of `make up`: Prefect server, process worker, deployments from
prefect.yaml, flow-run processes. Freight's database is SQLite here; the default stack, with
Freight and Prefect on the embedded PostgreSQL, is tests/integration/test_faults.py's."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.states import Scheduled
from sqlalchemy import Engine, select

from freight import procs, wiring
from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, User, get_engine, session_scope
from freight.db.migrate import upgrade
from freight.execution.handover import HandOver
from freight.forkclient import SOCKET_ENV
from freight.orchestrator import PrefectOrchestrator
from freight.service import apps, deploys, logs
from freight.settings import Settings
from freight.stack import Stack, prefect_auth, prefect_command, running_stack
from tests.conftest import database
from tests.doubles import HttpDouble, Reply
from tests.doubles.github import GitHubDouble
from tests.doubles.sentry import SentryDouble
from tests.doubles.slack import SlackDouble
from tests.factories import GitRepo, make_app, request
from tests.helpers import command_line, live_pids_with_env, reachable_by_others, wait_for
from tests.sshd import SshKeys, SshServer, two_hosts

pytestmark = pytest.mark.prefect

# The tasks of a deploy whose environment has no `verify` (that task runs only where it has).
STEP_NAMES = {
    "check-lock",
    "check-github-status",
    "prepare-workspace",
    "run-provider",
    "cleanup-workspace",
    "notify",
}


QUEUE_DEPTH = 5
API_KEY = "e2e-admin-key"
E2E_SECRET = "e2e-s3cret-9f8e7d"
FREIGHT = str(Path(sys.executable).parent / "freight")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Services:
    """The outside world as the stack's flow runs see it: doubles of GitHub, Slack and Sentry,
    and two SSH hosts."""

    github: GitHubDouble
    slack: SlackDouble
    sentry: SentryDouble
    ssh: tuple[SshKeys, SshServer, SshServer]


@dataclass
class Env:
    stack: Stack
    settings: Settings
    engine: Engine
    orchestrator: PrefectOrchestrator
    handover: HandOver
    tmp: Path
    services: Services

    def repo(self) -> GitRepo:
        return GitRepo.create(self.tmp / uuid.uuid4().hex)

    def app(self, command: str, **extra: Any) -> str:
        with session_scope(self.engine) as session:
            return make_app(session, self.repo(), command=command, **extra).name

    def create(self, app: str, env: str = "staging", **params: str) -> int:
        return request(self.handover, app, env, params=params)

    def deploy(self, deploy_id: int) -> Deploy:
        with session_scope(self.engine) as session:
            return deploys.get_deploy(session, deploy_id)

    def log(self, deploy_id: int) -> str:
        with session_scope(self.engine) as session:
            return "".join(c.text for c in logs.read_log(session, deploy_id).chunks)

    def wait_status(self, deploy_id: int, *statuses: DeployStatus, timeout: float = 90) -> Deploy:
        wait_for(
            lambda: self.deploy(deploy_id).status in statuses,
            timeout,
            f"deploy {deploy_id} to become {'/'.join(statuses)}",
            self.diagnostics,
        )
        return self.deploy(deploy_id)

    def run_state(self, run_id: str) -> StateType | None:
        state = self.orchestrator.client.read_flow_run(UUID(run_id)).state
        return state.type if state else None

    def repo_sha(self, app: str) -> str:
        with session_scope(self.engine) as session:
            url = apps.get_app(session, app).repository.url
        return GitRepo(Path(url)).git("rev-parse", "HEAD")

    def diagnostics(self) -> str:
        return (self.stack.log_dir / "worker.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = reachable_by_others(tmp_path_factory.mktemp("stack"))
    with (
        database("sqlite", tmp) as url,
        GitHubDouble().running() as github,
        SlackDouble().running() as slack,
        SentryDouble().running() as sentry,
        two_hosts(tmp / "ssh") as ssh,
    ):
        api_port = free_port()
        settings = Settings(
            home=tmp / "home",
            database_url=url,
            db_port=free_port(),
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            api_port=api_port,
            public_url=f"http://127.0.0.1:{api_port}",
            api_key=API_KEY,
            allow_local_repositories=True,
            github_api_url=github.url,
            slack_api_url=slack.api_url,  # type: ignore[attr-defined]
            sentry_api_url=sentry.api_url,  # type: ignore[attr-defined]
        )
        upgrade(url)
        tuning = {
            "FREIGHT_HEARTBEAT_INTERVAL": "1",
            "FREIGHT_CANCEL_GRACE": "2",
            "FREIGHT_RUNNER_LOST_AFTER": "10",
            "FREIGHT_QUEUE_POLL_INTERVAL": "0.2",
            # The secrets app configs name, where the flow runs look them up.
            "GITHUB_TOKEN": "gh-token",
            "SLACK_TOKEN": "xoxb-test",
            "SENTRY_TOKEN": "sntrys_test",
            "DEPLOY_SSH_KEY": ssh[0].private,
            "E2E_SECRET": E2E_SECRET,
            # What the environment lacks, flow runs read from Prefect's Secret blocks.
            "FREIGHT_SECRET_BLOCKS": "true",
        }
        services = Services(github, slack, sentry, ssh)  # type: ignore[arg-type]
        with (
            running_stack(settings, extra_env=tuning) as stack,
            temporary_settings(
                {
                    PREFECT_API_URL: settings.prefect_api_url,
                    PREFECT_API_AUTH_STRING: prefect_auth(settings),
                }
            ),
            PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
        ):
            # Deploys are handed over as the stack's API hands them over (started at once
            # from the fork server).
            local = settings.model_copy(update={"forkserver_socket": Path(stack.env[SOCKET_ENV])})
            handover = wiring.hand_over(local, orchestrator, env=stack.env)
            yield Env(stack, settings, get_engine(url), orchestrator, handover, tmp, services)


def test_deploy_started_from_prefect_joins_freights_numbering_and_queue(env: Env) -> None:
    # The first deploy (by ana) holds its slot until the test opens the gate.
    gate = env.tmp / f"gate-{uuid.uuid4().hex}"
    app = env.app(
        f'echo deploying {{sha}}; if [ "$FREIGHT_USER" = ana ]; then '
        f"while [ ! -e {gate} ]; do sleep 0.1; done; fi"
    )
    first = env.create(app)
    result = subprocess.run(
        [
            *prefect_command("deployment", "run", "deploy/deploy"),
            "--param",
            f"app={app}",
            "--param",
            "env=staging",
        ],
        env=env.stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert run_id, result.stdout

    def registered() -> int | None:
        with session_scope(env.engine) as session:
            return session.scalar(select(Deploy.id).where(Deploy.flow_run_id == run_id[1]))

    wait_for(registered, 60, "the Prefect-started run to register", env.diagnostics)
    second = registered()
    assert second is not None
    wait_for(
        lambda: f">> Waiting for {app}/staging#1 to finish" in env.log(second),
        60,
        "the Prefect-started deploy to wait for the first",
    )
    assert env.deploy(second).status == DeployStatus.PENDING
    gate.touch()
    done = env.wait_status(second, DeployStatus.FINISHED, DeployStatus.FAILED)
    assert done.status == DeployStatus.FINISHED, env.log(second)
    assert done.number == 2 and done.user and done.user.name == "prefect"
    before = env.deploy(first)
    assert before.status == DeployStatus.FINISHED
    assert before.date_finished and done.date_started and done.date_started >= before.date_finished
    assert "deploying " + (done.sha or "?") in env.log(second)

    client = env.orchestrator.client
    wait_for(lambda: env.run_state(run_id[1]) == StateType.COMPLETED, 30, "Completed state")
    flow_run = client.read_flow_run(UUID(run_id[1]))
    assert flow_run.name == f"{app}/staging#2"
    assert {f"app:{app}", "env:staging"} <= set(flow_run.tags)

    def task_runs() -> list[tuple[str, StateType | None]]:
        found = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
        return [(t.name.rsplit("-", 1)[0], t.state.type if t.state else None) for t in found]

    # The command's output is in the Prefect run log too, not only in Freight's.
    def prefect_log() -> str:
        found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        return "\n".join(entry.message for entry in found)

    wait_for(lambda: f"deploying {done.sha}" in prefect_log(), 30, "the Prefect run log")

    # The release, for the Prefect UI: an artifact whose key keeps a history per app/env.
    def release_artifacts() -> list[Any]:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"release-{app}-staging"]))
        )

    wait_for(lambda: len(release_artifacts()) == 2, 30, "a release artifact per deploy")
    latest = max(release_artifacts(), key=lambda artifact: artifact.created)
    assert latest.type == "markdown" and f"`{done.sha}`" in str(latest.data)
    assert f"## {app}/staging#2 finished" in str(latest.data)

    # Task run states reach the server through events, a moment after the flow run's own.
    wait_for(
        lambda: {name for name, state in task_runs() if state == StateType.COMPLETED} == STEP_NAMES,
        30,
        "six completed tasks",
        lambda: str(task_runs()),
    )


def test_prefects_api_needs_its_auth_string_and_freight_screens_what_it_starts(env: Env) -> None:
    app = env.app("echo deployed")
    deployment = env.orchestrator.client.read_deployment_by_name("deploy/deploy")
    start = f"{env.settings.prefect_api_url}/deployments/{deployment.id}/create_flow_run"
    body = {"parameters": {"app": app, "env": "staging", "user": "mallory", "force": True}}
    # Whoever reaches Prefect's port without the auth string starts nothing and reads nothing.
    assert httpx.post(start, json=body, timeout=10).status_code == 401
    assert (
        httpx.post(f"{env.settings.prefect_api_url}/logs/filter", json={}, timeout=10).status_code
        == 401
    )
    wrong = httpx.post(start, json=body, auth=("freight", "guess"), timeout=10)
    assert wrong.status_code == 401

    # With it, a run is screened by Freight as the API screens a deploy: someone else's lock
    # refuses it unless forced with a reason, and the run's state says why.
    locked = httpx.post(
        f"{env.stack.api_url}/api/0/locks/",
        json={"app": app, "env": "staging", "reason": "db migration", "owner": "ana"},
        headers={"Authorization": f"Key {API_KEY}"},
        timeout=10,
    )
    assert locked.status_code == 201, locked.text
    user, _, password = prefect_auth(env.settings).partition(":")

    def refused(parameters: dict[str, object], why: str) -> None:
        made = httpx.post(start, json={"parameters": parameters}, auth=(user, password), timeout=10)
        assert made.status_code == 201, made.text
        run_id = made.json()["id"]
        wait_for(
            lambda: env.run_state(run_id) in (StateType.CANCELLED, StateType.COMPLETED),
            60,
            "the refused run to end",
            env.diagnostics,
        )
        state = env.orchestrator.client.read_flow_run(UUID(run_id)).state
        assert state and state.type == StateType.CANCELLED, state
        assert why in (state.message or ""), state

    for parameters in (
        {"app": app, "env": "staging", "user": "mallory"},
        {"app": app, "env": "staging", "user": "mallory", "force": True},
    ):
        refused(parameters, "is locked by ana: db migration")
    # A freeze holds everyone, and a closed deploy window too: the same check refuses them.
    frozen = httpx.post(
        f"{env.stack.api_url}/api/0/freezes/",
        json={
            "app": app,
            "env": "production",
            "reason": "year-end",
            "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        },
        headers={"Authorization": f"Key {API_KEY}"},
        timeout=10,
    )
    assert frozen.status_code == 201, frozen.text
    refused({"app": app, "env": "production", "user": "mallory"}, "is frozen until")
    shut = env.app("echo deployed", windows=[{"deny": "* * * * *", "duration": "1h"}])
    refused(
        {"app": shut, "env": "staging", "user": "mallory"},
        "is outside its deploy windows; none opens within a year",
    )
    with session_scope(env.engine) as session:
        ran = session.scalars(
            select(Deploy).join(User, Deploy.user_id == User.id).where(User.name == "mallory")
        ).all()
    assert len(ran) == 4 and all(d.status == DeployStatus.CANCELLED for d in ran)
    assert {d.cancelled_by for d in ran} == {"a lock", "a freeze", "a deploy window"}
    assert not any("\ndeployed\n" in env.log(d.id) for d in ran)


def test_a_secret_is_masked_in_every_log_however_it_is_printed(env: Env) -> None:
    half = len(E2E_SECRET) // 2
    app = env.app(
        "; ".join(
            [
                # Redrawn with carriage returns, as progress bars are.
                r"""printf 'step 1/2\rtoken %s\r\n' "$TOKEN" """,
                # Split around a carriage return, which a console would drop.
                f"printf '{E2E_SECRET[:half]}\\r{E2E_SECRET[half:]}\\n'",
                # Split across two writes, the second one later.
                f"printf 'split {E2E_SECRET[:half]}'; sleep 0.3; printf '{E2E_SECRET[half:]}\\n'",
                # Across the boundary of the runner's 64 KiB reads.
                "python3 -c \"import os; print('a' * (65536 - 4) + os.environ['TOKEN'])\"",
            ]
        ),
        provider={"env": {"TOKEN": "${E2E_SECRET}"}},
    )
    deploy_id = env.create(app)
    done = env.wait_status(deploy_id, DeployStatus.FINISHED, DeployStatus.FAILED)
    assert done.status == DeployStatus.FINISHED, env.log(deploy_id)
    assert "token ********\n" in env.log(deploy_id) and "split ********\n" in env.log(deploy_id)
    client = env.orchestrator.client
    assert done.flow_run_id

    def prefect_log() -> str:
        found = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(done.flow_run_id or "")]))
        )
        return "\n".join(entry.message for entry in found)

    wait_for(lambda: "split ********" in prefect_log(), 30, "the Prefect run log")
    logs_of_processes = {
        path.name: path.read_text(errors="replace") for path in env.stack.log_dir.iterdir()
    }
    for where, text in {
        "Freight's log": env.log(deploy_id),
        "Prefect's run log": prefect_log(),
        **logs_of_processes,
    }.items():
        assert E2E_SECRET not in text.replace("\r", ""), where


def test_a_secret_kept_in_a_prefect_secret_block_reaches_the_command_masked(env: Env) -> None:
    # Not in the environment of any process of the stack: only in Prefect.
    assert "E2E_BLOCK_TOKEN" not in env.stack.env
    value = f"blk-{uuid.uuid4().hex}"
    Secret(value=value).save("e2e-block-token", overwrite=True, _sync=True)  # type: ignore[call-arg]
    app = env.app(
        f'test "$TOKEN" = {value} && echo "block token: $TOKEN"',
        provider={"env": {"TOKEN": "${E2E_BLOCK_TOKEN}"}},
    )
    deploy_id = env.create(app)
    done = env.wait_status(deploy_id, DeployStatus.FINISHED, DeployStatus.FAILED)
    assert done.status == DeployStatus.FINISHED, env.log(deploy_id)
    assert "block token: ********\n" in env.log(deploy_id) and value not in env.log(deploy_id)
    # One that is nowhere fails the deploy, naming both places it was looked for.
    missing = env.create(env.app("echo never", provider={"env": {"T": "${E2E_NOWHERE}"}}))
    failed = env.wait_status(missing, DeployStatus.FINISHED, DeployStatus.FAILED)
    assert failed.status == DeployStatus.FAILED
    assert "Prefect's Secret block 'e2e-nowhere'" in env.log(missing)


def test_queue_runs_one_at_a_time_in_order_while_other_envs_run_alongside(env: Env) -> None:
    # Each hand-over costs a flow-run process start, so this drains a short queue; the 20-deep
    # concurrent case is covered by tests/integration/test_queue.py with in-process runners.
    # Staging #1 holds its slot until production has finished: the two ran side by side.
    gate = env.tmp / f"gate-{uuid.uuid4().hex}"
    app = env.app(
        'if [ "$FREIGHT_ENVIRONMENT/$FREIGHT_NUMBER" = staging/1 ]; then '
        f"while [ ! -e {gate} ]; do sleep 0.1; done; fi; echo {{number}}"
    )
    ids: list[int] = []
    barrier = threading.Barrier(QUEUE_DEPTH)

    def create() -> None:
        barrier.wait()
        ids.append(env.create(app))

    threads = [threading.Thread(target=create) for _ in range(QUEUE_DEPTH)]
    for thread in threads:
        thread.start()
    production = env.create(app, "production")
    for thread in threads:
        thread.join()
    env.wait_status(production, DeployStatus.FINISHED, timeout=120)
    staging_first = min(ids)
    assert env.deploy(staging_first).status == DeployStatus.IN_PROGRESS
    gate.touch()
    for deploy_id in ids:
        done = env.wait_status(deploy_id, DeployStatus.FINISHED, DeployStatus.FAILED, timeout=300)
        assert done.status == DeployStatus.FINISHED, env.log(deploy_id)

    staged = sorted((env.deploy(i) for i in ids), key=lambda d: d.number)
    assert [d.number for d in staged] == list(range(1, QUEUE_DEPTH + 1))
    assert sorted(staged, key=lambda d: d.id) == staged  # numbered in creation order
    for earlier, later in itertools.pairwise(staged):
        assert earlier.date_finished and later.date_started
        assert later.date_started >= earlier.date_finished, (earlier.name, later.name)


def test_cancel_queued_and_running_deploys_from_freight(env: Env, marker: str) -> None:
    app = env.app("""bash -c 'trap "" TERM; sleep 600' & echo waiting; wait""")
    running_id = env.create(app, marker=marker)
    queued_id = env.create(app)
    env.handover.cancel(queued_id, by="bob")
    queued = env.deploy(queued_id)
    assert queued.status == DeployStatus.CANCELLED and queued.flow_run_id is None

    wait_for(lambda: "waiting\n" in env.log(running_id), 60, "command output", env.diagnostics)
    env.handover.cancel(running_id, by="bob")
    deploy = env.wait_status(running_id, DeployStatus.CANCELLED, timeout=30)
    assert deploy.reason == "Cancelled by bob"
    assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []
    assert deploy.flow_run_id
    wait_for(lambda: env.run_state(deploy.flow_run_id) == StateType.CANCELLED, 30, "Cancelled")


def test_cancel_from_prefect_stops_the_command_and_records_cancelled(env: Env, marker: str) -> None:
    app = env.app("""bash -c 'trap "" TERM; sleep 600' & echo waiting; wait""")
    deploy_id = env.create(app, marker=marker)
    wait_for(lambda: "waiting\n" in env.log(deploy_id), 60, "command output", env.diagnostics)
    run_id = env.deploy(deploy_id).flow_run_id
    assert run_id
    subprocess.run(
        [*prefect_command("flow-run", "cancel", run_id)],
        env=env.stack.env,
        check=True,
        capture_output=True,
    )
    deploy = env.wait_status(deploy_id, DeployStatus.CANCELLED, DeployStatus.FAILED, timeout=40)
    assert deploy.status == DeployStatus.CANCELLED, env.log(deploy_id)
    assert deploy.reason == "Cancelled by Prefect"
    assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []
    assert not (env.settings.workspaces / "checkouts" / str(deploy_id)).exists()
    wait_for(lambda: env.run_state(run_id) == StateType.CANCELLED, 40, "Cancelled state")


def test_killed_runner_fails_the_deploy_and_the_queue_moves_on(env: Env, marker: str) -> None:
    app = env.app('echo started; if [ -n "$FREIGHT_PARAM_MARKER" ]; then sleep 600; fi')
    lost_id = env.create(app, marker=marker)
    next_id = env.create(app)
    wait_for(lambda: "started\n" in env.log(lost_id), 60, "command output", env.diagnostics)
    run_id = env.deploy(lost_id).flow_run_id
    assert run_id
    # The flow-run process is a child of the fork server, standing in for the worker's client.
    runner = env.deploy(lost_id).runner_pid
    assert runner and procs.is_alive(runner)
    parent = next(p.ppid for p in procs.live_processes() if p.pid == runner)
    assert "freight.forkserver" in command_line(parent)
    killed_at = time.monotonic()
    os.kill(runner, signal.SIGKILL)
    lost = env.wait_status(lost_id, DeployStatus.FAILED, timeout=60)
    assert time.monotonic() - killed_at < 60
    assert lost.reason and lost.reason.startswith("Runner lost")
    # Then, outside the deploy's transaction, the reaper stops the command the dead runner
    # left behind and removes the checkout.
    wait_for(
        lambda: not live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}"),
        20,
        "the orphaned command to be stopped",
    )
    wait_for(
        lambda: not (env.settings.workspaces / "checkouts" / str(lost_id)).exists(),
        20,
        "the checkout to be removed",
    )
    assert env.wait_status(next_id, DeployStatus.FINISHED, timeout=60)
    assert env.run_state(run_id) == StateType.CRASHED


def freight(env: Env, *args: str, user: str = "cli-user") -> subprocess.CompletedProcess[str]:
    """The `freight` command line as a user runs it, against the stack's API."""
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **os.environ,
            "FREIGHT_URL": env.stack.api_url,
            "FREIGHT_API_KEY": API_KEY,
            "FREIGHT_USER": user,
            "FREIGHT_CONFIG": str(env.tmp / "no-config.toml"),
            "COLUMNS": "200",
        },
        check=False,
    )


def test_command_line_deploys_follows_and_reports_through_the_api(env: Env) -> None:
    good = env.app("echo shipping {sha}; echo done")
    followed = freight(env, "deploy", good, "staging", "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    sha = env.repo_sha(good)
    assert f"Queued {good}/staging#1" in followed.stdout
    assert f"shipping {sha}\ndone\n" in followed.stdout
    assert followed.stdout.rstrip().endswith(f"{good}/staging#1 finished")

    bad = env.app("echo trying; exit 3")
    failed = freight(env, "deploy", bad, "staging", "--follow")
    assert failed.returncode == 1
    assert "trying\n" in failed.stdout and f"{bad}/staging#1 failed" in failed.stdout

    status = freight(env, "status", f"{good}/staging#1")
    assert status.returncode == 0 and "finished" in status.stdout and "cli-user" in status.stdout
    log = freight(env, "log", f"{good}/staging#1")
    assert f"shipping {sha}\n" in log.stdout
    history = freight(env, "history", good)
    assert f"{good}/staging#1" in history.stdout
    releases = freight(env, "releases", good)
    assert sha[:7] in releases.stdout and "cli-user" in releases.stdout
    listing = freight(env, "apps")
    assert good in listing.stdout and bad in listing.stdout

    locked = freight(
        env, "lock", good, "staging", "--reason", "db migration", "--for", "1h", user="ana"
    )
    assert locked.returncode == 0 and "db migration" in locked.stdout
    refused = freight(env, "deploy", good, "staging")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"error (locked): {good}/staging is locked by ana: db migration"
    ]
    assert freight(env, "unlock", good, "staging").returncode == 0

    again = freight(env, "rollback", good, "staging")
    assert again.returncode == 1 and "(invalid_ref)" in again.stderr  # nothing to go back to

    made = freight(env, "keys", "create", "reader", "--scope", "read")
    key = made.stdout.strip().splitlines()[-1]
    assert made.returncode == 0 and key.startswith("frt_")
    assert "reader" in freight(env, "keys", "list").stdout
    unknown = freight(env, "status", f"{good}/staging#99")
    assert unknown.returncode == 1 and unknown.stderr.startswith("error (invalid_resource)")
    assert "Traceback" not in unknown.stderr


def test_integrations_gate_run_and_announce_a_deploy(env: Env) -> None:
    """GitHub CI pending, then green; Fabric on two SSH hosts; Slack, Sentry and GitHub told."""
    github, slack, sentry = env.services.github, env.services.slack, env.services.sentry
    _, one, two = env.services.ssh
    target = env.tmp / f"hosts-{uuid.uuid4().hex[:8]}"
    target.mkdir()
    app = env.app(
        "unused",
        provider={
            "type": "fabric",
            "hosts": [one.host, two.host],
            "user": "root",
            "key": "${DEPLOY_SSH_KEY}",
            "commands": [
                "echo releasing {sha}",
                f'echo "{{sha}}" > "{target}/$(echo $SSH_CONNECTION | cut -d\' \' -f4)"',
            ],
        },
        checks=[
            {
                "type": "github",
                "repo": "acme/web",
                "contexts": ["ci/build"],
                "token": "${GITHUB_TOKEN}",
            }
        ],
        notifiers=[
            {"type": "slack", "token": "${SLACK_TOKEN}", "channel": "#deploys"},
            {
                "type": "sentry",
                "organization": "acme",
                "project": "web",
                "token": "${SENTRY_TOKEN}",
                "repository": "acme/web",
            },
            {"type": "github", "repo": "acme/web", "token": "${GITHUB_TOKEN}", "deployments": True},
        ],
    )
    sha = env.repo_sha(app)
    github.set_status(sha, "ci/build", "pending", "building")
    deploy_id = env.create(app)
    wait_for(
        lambda: ">> Waiting for check github: waiting for ci/build" in env.log(deploy_id),
        60,
        "the deploy to wait for CI",
        env.diagnostics,
    )
    assert env.deploy(deploy_id).status == DeployStatus.IN_PROGRESS
    github.set_status(sha, "ci/build", "success", "passed")
    done = env.wait_status(deploy_id, DeployStatus.FINISHED, DeployStatus.FAILED, timeout=90)
    assert done.status == DeployStatus.FINISHED, env.log(deploy_id)
    wait_for(lambda: ">> Deploy finished after" in env.log(deploy_id), 10, "the last line")
    text = env.log(deploy_id)

    # The provider ran on both hosts, in order, its lines prefixed with the host.
    for server in (one, two):
        assert (target / str(server.port)).read_text() == f"{sha}\n"
        assert f"[{server.host}] releasing {sha}\n" in text
    assert text.index(f"[{one.host}] releasing") < text.index(f"[{two.host}] releasing")
    assert text.rstrip().splitlines()[-1].startswith(">> Deploy finished after")

    # The last notifications go out after the deploy has ended.
    wait_for(
        lambda: (
            any(d["version"] == sha for d in sentry.deploys)
            and any(s["state"] == "success" for s in github.deployment_statuses)
            and any(s["state"] == "success" and s["sha"] == sha for s in github.created_statuses)
        ),
        30,
        "the final notifications",
    )
    # GitHub: the check read statuses until green; the deploy is a commit status and a Deployment.
    looks = github.received("GET", f"/repos/acme/web/commits/{sha}/status")
    assert len(looks) >= 2
    assert [s["state"] for s in github.created_statuses if s["sha"] == sha] == [
        "pending",
        "pending",
        "success",
    ]
    (deployment,) = [d for d in github.deployments.values() if d["sha"] == sha]
    assert [
        s["state"] for s in github.deployment_statuses if s["deployment_id"] == deployment["id"]
    ] == [
        "queued",
        "in_progress",
        "success",
    ]
    # Slack: one message, posted and then updated as the deploy moved.
    ours = [r for r in slack.requests if f"{app}/staging" in r.body.decode()]
    assert [r.path for r in ours] == [
        "/api/chat.postMessage",
        "/api/chat.update",
        "/api/chat.update",
    ]
    assert "finished" in ours[-1].json()["text"]
    # Sentry: the release when it started, finalized with a deploy when it finished.
    assert sentry.releases[sha]["refs"] == [{"repository": "acme/web", "commit": sha}]
    (record,) = [d for d in sentry.deploys if d["version"] == sha]
    assert (record["environment"], record["name"]) == ("staging", f"{app}/staging#1")
    assert sentry.releases[sha]["dateReleased"] == record["dateFinished"]


def test_poll_vcs_deploys_a_pushed_commit_and_late_runs_never_pile_up(env: Env) -> None:
    """The poll-vcs deployment as prefect.yaml makes it: every 60 s, one run at a time. Runs
    that fell due while no worker was there start together; all but one are dropped."""
    client = env.orchestrator.client
    deployment = client.read_deployment_by_name("poll-vcs/poll-vcs")
    assert [s.schedule.interval.total_seconds() for s in deployment.schedules] == [60]  # type: ignore[union-attr]
    assert deployment.concurrency_options is not None
    assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"

    origin = env.repo()
    spec = AppSpec.model_validate(
        {
            "name": f"auto{uuid.uuid4().hex[:8]}",
            "repository": origin.url,
            "provider": {"type": "shell", "command": "echo auto-deployed {sha}"},
            "environments": {"staging": {"default_ref": "main", "auto_deploy": {"branch": "main"}}},
        }
    )
    with session_scope(env.engine) as session:
        app = apps.save_app(session, spec, source=AppSource.API).name
    pushed = origin.commit("Ship the banner")

    # The worker is away (its pool paused) while three runs fall due; then it is back.
    client.update_work_pool("freight", WorkPoolUpdate(is_paused=True))
    try:
        late = datetime.now(UTC) - timedelta(minutes=3)
        runs = [
            client.create_flow_run_from_deployment(
                deployment.id, state=Scheduled(scheduled_time=late + timedelta(minutes=i))
            )
            for i in range(3)
        ]
    finally:
        client.update_work_pool("freight", WorkPoolUpdate(is_paused=False))

    def ended() -> list[StateType | None]:
        return [env.run_state(str(run.id)) for run in runs]

    wait_for(
        lambda: all(state in {StateType.COMPLETED, StateType.CANCELLED} for state in ended()),
        90,
        "the late poll-vcs runs to end",
        lambda: f"{ended()}\n{env.diagnostics()}",
    )
    assert StateType.CANCELLED in ended(), ended()

    def automatic() -> list[Deploy]:
        with session_scope(env.engine) as session:
            app_id = apps.get_app(session, app).id
            return list(session.scalars(select(Deploy).where(Deploy.app_id == app_id)))

    wait_for(automatic, 90, "an automatic deploy", env.diagnostics)
    (deploy,) = automatic()
    done = env.wait_status(deploy.id, DeployStatus.FINISHED, DeployStatus.FAILED)
    assert (done.status, done.sha, done.user.name if done.user else None) == (
        DeployStatus.FINISHED,
        pushed,
        "autodeploy",
    )
    assert f"auto-deployed {pushed}\n" in env.log(deploy.id)

    # Those that came while a run was going (one of these, or the schedule's own) were
    # dropped, not queued up: no two runs of the deployment ever overlapped.
    never = datetime.max.replace(tzinfo=UTC)
    spans = sorted(
        (run.start_time, run.end_time or never)
        for run in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
        if run.state
        and run.state.type in (StateType.COMPLETED, StateType.RUNNING)
        and run.start_time
    )
    assert spans
    for (_, ended_at), (started_at, _) in itertools.pairwise(spans):
        assert started_at >= ended_at, spans


class Health(HttpDouble):
    """The deployed service's health endpoint; `fail_next` makes it fail a check."""

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/health", lambda request: Reply(200, {"ok": True}))


def test_a_failed_verification_task_rolls_back_through_the_engine(env: Env) -> None:
    with Health().running() as health:
        origin = env.repo()
        with session_scope(env.engine) as session:
            app = make_app(
                session,
                origin,
                command="echo deployed {sha}",
                verify={"http": f"{health.url}/health", "on_failure": "rollback"},
            ).name
        first = env.create(app)
        good = env.wait_status(first, DeployStatus.FINISHED, DeployStatus.FAILED)
        assert good.status == DeployStatus.FINISHED, env.log(first)
        origin.commit("breaks /health")
        health.fail_next.append(Reply(503, {"ok": False}))
        second = env.create(app)
        broken = env.wait_status(second, DeployStatus.FINISHED, DeployStatus.FAILED)
        assert broken.status == DeployStatus.FAILED
        assert broken.reason and broken.reason.startswith("Verify failed: GET ")
        run_id = broken.flow_run_id
        assert run_id
        wait_for(lambda: env.run_state(run_id) == StateType.FAILED, 30, "the run to fail")
        # The rollback ran by itself, first in the queue, and put the good sha back.
        with session_scope(env.engine) as session:
            back = deploys.get_deploy_by_number(session, app=app, environment="staging", number=3)
        restored = env.wait_status(back.id, DeployStatus.FINISHED, DeployStatus.FAILED)
        assert restored.status == DeployStatus.FINISHED, env.log(back.id)
        assert (restored.sha, restored.user and restored.user.name) == (good.sha, "freight")
        assert f"deployed {good.sha}" in env.log(back.id)
        assert len(health.received("GET", "/health")) == 3
