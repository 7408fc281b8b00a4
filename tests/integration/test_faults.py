"""The default `make up` stack under load and faults: the embedded PostgreSQL, Prefect server,
worker, fork server, API and reconciler, supervised as `freight up` supervises them.

Deploys come in through the API, as clients send them. Every deploy's command writes when it
starts and ends to a timeline file, so what a user would check can be checked: every accepted
deploy ran exactly once, in its turn, never two at once in one app/environment, and no
environment waited more than 30 s after a fault.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, select

from freight import procs
from freight.db import App, Deploy, DeployStatus, Lease, get_engine, session_scope, utcnow
from freight.orchestrator import PrefectOrchestrator
from freight.service import logs, steps
from freight.service.steps import StepState
from freight.settings import Settings
from freight.stack import Stack, prefect_auth, prefect_command, running_stack
from tests.factories import GitRepo, make_app
from tests.helpers import command_line, live_pids_with_env, reachable_by_others, wait_for

pytestmark = pytest.mark.prefect

API_KEY = "faults-admin-key"
# What a fault may cost an environment at most (the promise).
UNBLOCKED_WITHIN = 30.0
ENVIRONMENTS = ("staging", "production")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Plant:
    """The stack, and what the tests need to drive and watch it."""

    stack: Stack
    settings: Settings
    engine: Engine
    orchestrator: PrefectOrchestrator
    tmp: Path
    keep_down: set[str] = field(default_factory=set)

    @property
    def api(self) -> str:
        return f"{self.stack.api_url}/api/0"

    def apps(self, count: int, command: str) -> list[str]:
        """`count` new apps (two environments each) whose command is `command`, with
        `{timeline}` standing for the timeline file."""
        made = []
        for _ in range(count):
            repo = GitRepo.create(self.tmp / uuid.uuid4().hex)
            with session_scope(self.engine) as session:
                app = make_app(
                    session, repo, command=command.replace("{timeline}", str(self.timeline))
                )
                made.append(app.name)
        return made

    @property
    def timeline(self) -> Path:
        return self.tmp / "timeline"

    def post(self, app: str, env: str, **extra: str) -> int | None:
        """One deploy as a client asks for it; its id, or None if the API did not answer."""
        try:
            response = httpx.post(
                f"{self.api}/deploys/",
                json={"app": app, "env": env, "user": "ana", **extra},
                headers={"Authorization": f"Key {API_KEY}"},
                timeout=60,
            )
        except httpx.HTTPError:
            return None
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def burst(self, pairs: list[tuple[str, str]], clients: int = 8) -> list[int | None]:
        """All the deploys at once, from `clients` clients."""
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(lambda pair: self.post(*pair), pairs))

    def deploys_of(self, apps: list[str]) -> list[Deploy]:
        with session_scope(self.engine) as session:
            return list(
                session.scalars(
                    select(Deploy).join(App).where(App.name.in_(apps)).order_by(Deploy.id)
                )
            )

    def deploy(self, deploy_id: int) -> Deploy:
        with session_scope(self.engine) as session:
            return session.get_one(Deploy, deploy_id)

    def log(self, deploy_id: int) -> str:
        with session_scope(self.engine) as session:
            return "".join(c.text for c in logs.read_log(session, deploy_id).chunks)

    def wait_done(self, apps: list[str], count: int, timeout: float) -> list[Deploy]:
        def done() -> bool:
            found = self.deploys_of(apps)
            return len(found) >= count and all(DeployStatus(d.status).is_final for d in found)

        wait_for(done, timeout, f"{count} deploys to end", self.diagnostics)
        return self.deploys_of(apps)

    def run_state(self, run_id: str) -> StateType | None:
        run = self.orchestrator.client.read_flow_run(UUID(run_id))
        return run.state.type if run.state else None

    def diagnostics(self) -> str:
        reconciler = self.stack.processes["reconciler"]
        if reconciler.poll() is None:  # what each of its threads is doing now
            path = self.stack.log_dir / "reconciler.log"
            before = path.stat().st_size
            reconciler.send_signal(signal.SIGUSR1)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: path.stat().st_size > before, 5, "the reconciler's stacks")
        parts = []
        for name in ("reconciler", "api", "worker"):
            path = self.stack.log_dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log\n{path.read_text()[-6000:]}")
        return "\n".join(parts)

    def restart_count(self, name: str) -> int:
        return len(self.stack.restarts.get(name, []))


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    tmp = reachable_by_others(tmp_path_factory.mktemp("faults"))
    api_port = free_port()
    # The defaults of `make up`: the embedded PostgreSQL for Freight and Prefect, and the
    # default timings (heartbeat, reap time, reconciler, lease) the 30 s promise rests on.
    settings = Settings(
        home=tmp / "home",
        db_port=free_port(),
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        api_port=api_port,
        public_url=f"http://127.0.0.1:{api_port}",
        api_key=API_KEY,
        allow_local_repositories=True,
    )
    keep_down: set[str] = set()
    stop = threading.Event()
    with running_stack(settings) as stack:
        supervisor = threading.Thread(
            target=stack.supervise, args=(stop,), kwargs={"keep_down": keep_down}, daemon=True
        )
        supervisor.start()
        try:
            with (
                temporary_settings(
                    {
                        PREFECT_API_URL: settings.prefect_api_url,
                        PREFECT_API_AUTH_STRING: prefect_auth(settings),
                    }
                ),
                PrefectOrchestrator(settings.deploy_deployment) as orchestrator,
            ):
                yield Plant(
                    stack,
                    settings,
                    get_engine(settings.database_url),
                    orchestrator,
                    tmp,
                    keep_down,
                )
        finally:
            stop.set()
            supervisor.join(10)
    assert supervisor.is_alive() is False


# -- what a user checks -----------------------------------------------------------------------

TIMED = (
    'echo "start {app} {environment} {number} $(date +%s.%N)" >> {timeline}; '
    "sleep 0.3; "
    'echo "end {app} {environment} {number} $(date +%s.%N)" >> {timeline}'
)


def timeline(plant: Plant, apps: list[str]) -> dict[tuple[str, str], list[tuple[str, int, float]]]:
    """(kind, number, time) per app/env, in the order written."""
    found: dict[tuple[str, str], list[tuple[str, int, float]]] = defaultdict(list)
    if not plant.timeline.exists():
        return found
    for line in plant.timeline.read_text().splitlines():
        kind, app, env, number, at = line.split()
        if app in apps:
            found[(app, env)].append((kind, int(number), float(at)))
    return found


def assert_each_ran_once_in_turn(plant: Plant, apps: list[str], deploys: list[Deploy]) -> None:
    """Every deploy finished, ran its command exactly once; numbers without gaps; per
    app/env first come, first served, and never two at once."""
    assert {d.name: d.status for d in deploys} == {d.name: "finished" for d in deploys}
    by_queue: dict[tuple[str, str], list[Deploy]] = defaultdict(list)
    for deploy in deploys:
        by_queue[(deploy.app.name, deploy.environment)].append(deploy)
    runs = timeline(plant, apps)
    for key, queue in by_queue.items():
        assert [d.number for d in queue] == list(range(1, len(queue) + 1)), key
        events = runs[key]
        starts = [number for kind, number, _ in events if kind == "start"]
        assert sorted(starts) == [d.number for d in queue], (key, events)  # once each
        assert starts == sorted(starts), (key, events)  # in their turn
        for (kind, number, _), (next_kind, next_number, _) in itertools.pairwise(events):
            # Each start is followed by its own end before anything else of that app/env.
            if kind == "start":
                assert (next_kind, next_number) == ("end", number), (key, events)
    # One completed run per deploy in Prefect (its engine says so a moment after Freight).
    run_ids = [UUID(d.flow_run_id) for d in deploys if d.flow_run_id]
    assert len(run_ids) == len(deploys)

    def states() -> dict[str, StateType | None]:
        return {
            str(run.id): run.state.type if run.state else None
            for run in plant.orchestrator.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
                limit=len(run_ids),
            )
        }

    wait_for(
        lambda: set(states().values()) == {StateType.COMPLETED},
        60,
        "every run to be Completed in Prefect",
        lambda: str(states()),
    )


def moving_again(deploys: list[Deploy], since: datetime) -> dict[str, float]:
    """How long after `since` (a fault, or its end) each app/env with work waiting started its
    next deploy: the time it stayed blocked. (Later deploys wait for capacity, not the fault.)"""
    by_queue: dict[str, list[Deploy]] = defaultdict(list)
    for deploy in deploys:
        by_queue[f"{deploy.app.name}/{deploy.environment}"].append(deploy)
    waits = {}
    for name, queue in by_queue.items():
        later = [d for d in queue if d.date_started and d.date_started > since]
        if not later:
            continue
        first = min(later, key=lambda d: d.number)
        assert first.date_started
        waits[name] = (first.date_started - max(since, first.date_created)).total_seconds()
    return waits


def pairs_of(apps: list[str], rounds: int) -> list[tuple[str, str]]:
    return [(app, env) for _ in range(rounds) for app in apps for env in ENVIRONMENTS]


# -- the tests --------------------------------------------------------------------------------


def test_a_burst_of_60_deploys_over_12_environments_runs_each_once_in_turn(plant: Plant) -> None:
    apps = plant.apps(6, TIMED)
    accepted = plant.burst(pairs_of(apps, 5))
    assert None not in accepted and len(accepted) == 60
    deploys = plant.wait_done(apps, 60, timeout=400)
    assert sorted(d.id for d in deploys) == sorted(accepted)  # type: ignore[type-var]
    assert_each_ran_once_in_turn(plant, apps, deploys)


def test_the_api_killed_amid_creates_and_hand_overs_loses_nothing(plant: Plant) -> None:
    apps = plant.apps(4, TIMED)
    api = plant.stack.processes["api"]
    killed: list[datetime] = []

    def kill_when_busy() -> None:
        wait_for(lambda: len(plant.deploys_of(apps)) >= 6, 60, "the first creates")
        killed.append(utcnow())
        os.kill(api.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    answered = [i for i in plant.burst(pairs_of(apps, 3), clients=8) if i is not None]
    killer.join()
    wait_for(lambda: plant.restart_count("api") >= 1, 30, "the API to be started again")
    wait_for(lambda: _healthy(f"{plant.stack.api_url}/health"), 60, "the API to answer again")
    # Some requests were cut off with the API; those that got a 201 are in, and so is whatever
    # was written before the kill: nothing is half-written.
    made = plant.deploys_of(apps)
    assert set(answered) <= {d.id for d in made}
    deploys = plant.wait_done(apps, len(made), timeout=300)
    assert_each_ran_once_in_turn(plant, apps, deploys)
    waits = moving_again(deploys, killed[0])
    assert max(waits.values()) < UNBLOCKED_WITHIN, waits


def test_a_stopped_runner_is_reaped_and_when_continued_its_command_is_gone(
    plant: Plant, marker: str
) -> None:
    [app] = plant.apps(
        1,
        'echo "start {app} {environment} {number} $(date +%s.%N)" >> {timeline}; '
        'if [ -n "$FREIGHT_PARAM_MARKER" ]; then sleep 600; fi; '
        'echo "end {app} {environment} {number} $(date +%s.%N)" >> {timeline}',
    )
    stalled = plant.post(app, "staging", params={"marker": marker})  # type: ignore[arg-type]
    after = plant.post(app, "staging")
    assert stalled and after
    wait_for(lambda: plant.deploy(stalled).runner_pid, 60, "the runner", plant.diagnostics)
    runner = plant.deploy(stalled).runner_pid
    assert runner
    wait_for(lambda: live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}"), 30, "its command")
    os.kill(runner, signal.SIGSTOP)
    stopped_at = utcnow()
    try:
        lost = wait_for_status(plant, stalled, DeployStatus.FAILED, UNBLOCKED_WITHIN + 10)
        assert lost.reason and lost.reason.startswith("Runner lost")
        reaped_log = plant.log(stalled)
        wait_for(lambda: plant.deploy(after).date_started, 60, "the next deploy to start")
        # Its command was stopped before the next deploy was handed over.
        assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []
        nxt = wait_for_status(plant, after, DeployStatus.FINISHED, 60)
        assert nxt.date_started and (nxt.date_started - stopped_at).total_seconds() < (
            UNBLOCKED_WITHIN
        )
    finally:
        os.kill(runner, signal.SIGCONT)
    # Continued, it finds its claim gone: it stops, and writes nothing more to the deploy.
    wait_for(lambda: not procs.is_alive(runner), 30, "the continued runner to end")
    assert plant.log(stalled) == reaped_log
    assert plant.deploy(stalled).status == DeployStatus.FAILED
    events = timeline(plant, [app])[(app, "staging")]
    assert [(kind, number) for kind, number, _ in events] == [
        ("start", 1),
        ("start", 2),
        ("end", 2),
    ]


def wait_for_status(plant: Plant, deploy_id: int, status: DeployStatus, timeout: float) -> Deploy:
    wait_for(
        lambda: DeployStatus(plant.deploy(deploy_id).status).is_final,
        timeout,
        f"deploy {deploy_id} to end",
        plant.diagnostics,
    )
    deploy = plant.deploy(deploy_id)
    assert deploy.status == status, (deploy.reason, plant.log(deploy_id))
    return deploy


def test_the_reconciler_killed_with_a_runner_still_unblocks_within_30s(
    plant: Plant, marker: str
) -> None:
    [app] = plant.apps(
        1, 'echo started; if [ -n "$FREIGHT_PARAM_MARKER" ]; then sleep 600; fi; echo done'
    )
    doomed = plant.post(app, "staging", params={"marker": marker})  # type: ignore[arg-type]
    after = plant.post(app, "staging")
    assert doomed and after
    wait_for(lambda: "started\n" in plant.log(doomed), 60, "the command", plant.diagnostics)
    runner = plant.deploy(doomed).runner_pid
    assert runner
    restarts = plant.restart_count("reconciler")
    killed_at = utcnow()
    os.kill(plant.stack.processes["reconciler"].pid, signal.SIGKILL)
    os.kill(runner, signal.SIGKILL)
    nxt = wait_for_status(plant, after, DeployStatus.FINISHED, UNBLOCKED_WITHIN + 30)
    assert nxt.date_started and (nxt.date_started - killed_at).total_seconds() < UNBLOCKED_WITHIN
    lost = plant.deploy(doomed)
    assert lost.status == DeployStatus.FAILED and lost.reason.startswith("Runner lost")
    assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []
    assert plant.restart_count("reconciler") == restarts + 1
    # Its page: the step the runner died in never ended; once the notices could no longer come,
    # it reads stopped, and the steps it never reached skipped.
    assert lost.date_finished
    with session_scope(plant.engine, read_only=True) as session:
        shown = steps.of(
            session, lost, shows_verify=False, at=lost.date_finished + timedelta(minutes=3)
        )
    assert [(s.name, s.state) for s in shown] == [
        ("check-lock", StepState.COMPLETED),
        ("check-github-status", StepState.COMPLETED),
        ("prepare-workspace", StepState.COMPLETED),
        ("run-provider", StepState.STOPPED),
        ("cleanup-workspace", StepState.SKIPPED),
        ("notify", StepState.SKIPPED),
    ]


def test_a_worker_killed_between_taking_a_run_and_starting_it_holds_nothing(plant: Plant) -> None:
    [app] = plant.apps(1, "echo deployed {sha}")
    forkserver = plant.stack.processes["forkserver"]
    worker = plant.stack.processes["worker"]
    # The host freezes: nothing can be started there. The API's launcher gives up on it after
    # a few seconds and leaves the run to the worker, which takes it and hangs starting it.
    os.kill(forkserver.pid, signal.SIGSTOP)
    try:
        deploy_id = plant.post(app, "staging")
        assert deploy_id
        wait_for(lambda: plant.deploy(deploy_id).flow_run_id, 30, "the hand-over")
        run_id = plant.deploy(deploy_id).flow_run_id
        assert run_id

        def taken_by_the_worker() -> bool:
            starting = [
                pid
                for pid in procs.descendants({worker.pid})
                if "freight.forkclient" in command_line(pid)
            ]
            return bool(starting) and plant.run_state(run_id) == StateType.PENDING

        wait_for(taken_by_the_worker, 60, "the worker to take the run", plant.diagnostics)
        killed_at = utcnow()
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and the client it was starting
    finally:
        os.kill(forkserver.pid, signal.SIGKILL)
    deploy = wait_for_status(plant, deploy_id, DeployStatus.FINISHED, UNBLOCKED_WITHIN + 30)
    assert deploy.date_started
    assert (deploy.date_started - killed_at).total_seconds() < UNBLOCKED_WITHIN
    assert deploy.flow_run_id == run_id  # the same run, given back and started
    wait_for(lambda: plant.run_state(run_id) == StateType.COMPLETED, 60, "its run to complete")


def test_prefect_down_for_30s_during_a_burst_loses_nothing(plant: Plant) -> None:
    apps = plant.apps(2, TIMED)
    server = plant.stack.processes["server"]
    back: list[datetime] = []

    def outage() -> None:
        wait_for(lambda: len(plant.deploys_of(apps)) >= 4, 60, "the first creates")
        plant.keep_down.add("server")
        for pid in procs.descendants({server.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(30)
        plant.keep_down.discard("server")  # the supervisor starts it again
        wait_for(
            lambda: _healthy(f"{plant.settings.prefect_api_url}/health"),
            90,
            "the Prefect server to be back",
        )
        back.append(utcnow())

    outside = threading.Thread(target=outage)
    outside.start()
    answered = plant.burst(pairs_of(apps, 4), clients=4)
    outside.join()
    assert None not in answered  # the API answers with Prefect away: the queue is Freight's
    deploys = plant.wait_done(apps, len(answered), timeout=400)
    assert_each_ran_once_in_turn(plant, apps, deploys)
    waits = moving_again(deploys, back[0])
    assert max(waits.values()) < UNBLOCKED_WITHIN, waits


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_maintenance_run_killed_mid_way_frees_its_slot(plant: Plant) -> None:
    """The process running `maintenance` dies holding the flow's one-at-a-time slot: its run
    is marked Crashed once its lease runs out, and maintenance runs again."""

    def holder() -> tuple[str, list[int]] | None:
        """The run holding the flow's lease, and the worker's stand-in for it (forkclient: the
        run's own process, forked by the fork server, keeps the server's environment)."""
        with session_scope(plant.engine) as session:
            lease = session.get(Lease, "flow:maintenance")
            if lease is None or lease.date_expires < utcnow():
                return None
            holder_id = lease.holder
        pids = [
            proc.pid
            for proc in procs.live_processes()
            if procs.environ_has(proc.pid, f"PREFECT__FLOW_RUN_ID={holder_id}")
        ]
        return (holder_id, pids) if pids else None

    found: list[str] = []

    def caught() -> bool:
        now = holder()
        if now is None:
            return False
        run_id, stand_ins = now
        # Every flow-run process is frozen first, then the run looked at again: a run takes
        # well under a second, and one that finished between the look and the kill would die
        # at its exit, not mid-way.
        forked = procs.descendants({plant.stack.processes["forkserver"].pid}) - {
            plant.stack.processes["forkserver"].pid
        }
        frozen = [*stand_ins, *forked]
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            if plant.run_state(run_id) == StateType.RUNNING and holder() == now:
                for pid in stand_ins:  # the fork server kills the run its client stood in for
                    os.kill(pid, signal.SIGKILL)
                wait_for(
                    lambda: any(not procs.is_alive(pid) for pid in forked), 10, "the run killed"
                )
                found.append(run_id)
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return bool(found)

    for _ in range(3):  # maintenance runs every 20 s and takes a moment: catch one at work
        subprocess.run(
            [*prefect_command("deployment", "run", "maintenance/maintenance")],
            env=plant.stack.env,
            capture_output=True,
            check=False,
        )
        try:
            wait_for(caught, 25, "a maintenance run at work")
            break
        except AssertionError:
            continue
    assert found, "no maintenance run was caught at work"
    [run_id] = found
    killed_at = time.monotonic()

    def states() -> str:
        history = plant.orchestrator.client.read_flow_run_states(UUID(run_id))
        shown = [f"{s.timestamp:%H:%M:%S.%f} {s.type.value} {s.name}: {s.message}" for s in history]
        return "--- its states\n" + "\n".join(shown) + "\n" + plant.diagnostics()

    wait_for(
        lambda: plant.run_state(run_id) == StateType.CRASHED,
        UNBLOCKED_WITHIN,
        "the killed run to be marked crashed",
        states,
    )
    assert time.monotonic() - killed_at < UNBLOCKED_WITHIN

    def later_run_completed() -> bool:
        with session_scope(plant.engine) as session:
            lease = session.get(Lease, "flow:maintenance")
            return lease is not None and lease.holder != run_id

    wait_for(later_run_completed, 60, "a later maintenance run to work", plant.diagnostics)
