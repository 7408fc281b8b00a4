"""Whole deploys run in-process (no Prefect): real git checkouts, real process groups, both DBs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sqlalchemy import Engine, select, update

from freight import checks, procs, system_users, vcs
from freight.checks import CheckContext, CheckResult, Verdict
from freight.db import Deploy, DeployStatus, Lock, LogChunk, Worker, session_scope, utcnow
from freight.errors import AppLocked
from freight.execution import delivery, housekeeping, refs
from freight.execution.handover import HandOver
from freight.execution.ports import RunState, Submission
from freight.execution.reconciler import MAX_HAND_OVERS, Reconciler, Timing
from freight.plugins import PluginConfig
from freight.service import deploys, locks, logs, releases, workers
from freight.service.workers import WorkerState
from freight.settings import Settings
from freight.stack import guard_home
from tests.doubles import RecordingServer, recording_server
from tests.factories import (
    GitRepo,
    RecordingOrchestrator,
    make_app,
    register,
    request,
    run_inline,
)
from tests.helpers import live_pids_with_env, reachable_by_others, wait_for


def contiguous_log(engine: Engine, deploy_id: int) -> str:
    """The whole log, after checking that its chunks tile it without gap or overlap."""
    with session_scope(engine) as session:
        chunks = list(
            session.scalars(
                select(LogChunk).where(LogChunk.deploy_id == deploy_id).order_by(LogChunk.offset)
            )
        )
    offset = 0
    for chunk in chunks:
        assert chunk.offset == offset and chunk.size == len(chunk.text)
        offset += chunk.size
    return "".join(chunk.text for chunk in chunks)


def log_text(engine: Engine, deploy_id: int) -> str:
    with session_scope(engine) as session:
        return "".join(c.text for c in logs.read_log(session, deploy_id).chunks)


class Harness:
    def __init__(self, engine: Engine, settings: Settings, origin: GitRepo, hook: RecordingServer):
        self.engine, self.settings, self.origin, self.hook = engine, settings, origin, hook
        self.orchestrator = RecordingOrchestrator()
        self.handover = HandOver(
            engine,
            self.orchestrator,
            workspace_root=settings.workspaces,
            git=settings.git_access(),
        )

    def app(self, command: str, **extra: object) -> str:
        with session_scope(self.engine) as session:
            notifiers = [{"type": "webhook", "url": self.hook.url + "/hook"}]
            return make_app(
                session, self.origin, command=command, notifiers=notifiers, **extra
            ).name

    def create(
        self,
        app: str,
        *,
        ref: str | None = None,
        user: str = "ana",
        force: bool = False,
        **params: str,
    ) -> int:
        return request(self.handover, app, ref=ref, user=user, params=params, force=force)

    def register(
        self, app: str, *, force: bool = False, reason: str | None = None
    ) -> tuple[int, str]:
        return register(self.handover, app, force=force, reason=reason)

    def execute(self, deploy_id: int) -> DeployStatus | None:
        """Run the deploy as the engine runs the run it was handed to."""
        deploy = self.deploy(deploy_id)
        assert deploy.flow_run_id and deploy.claim, f"{deploy.name} was not handed over"
        return run_inline(
            self.settings, self.handover, deploy_id, run_id=deploy.flow_run_id, claim=deploy.claim
        )

    def run_registered(self, deploy_id: int, run_id: str) -> DeployStatus | None:
        return run_inline(self.settings, self.handover, deploy_id, run_id=run_id, claim=None)

    def deploy(self, deploy_id: int) -> Deploy:
        with session_scope(self.engine) as session:
            return deploys.get_deploy(session, deploy_id)

    def reconciler(self) -> Reconciler:
        return Reconciler(
            self.handover,
            timing=Timing(lost_after=30, submit_after=3, pending_for=20, worker_beat=2),
            workspace_root=self.settings.workspaces,
            grace=self.settings.cancel_grace,
        )

    def maintain(self) -> housekeeping.MaintenanceReport:
        with httpx.Client(timeout=5) as client:
            return housekeeping.run_maintenance(
                self.engine, delivery.courier(self.settings, client), print
            )

    def age(self, deploy_id: int, **values: object) -> None:
        with session_scope(self.engine) as session:
            session.execute(update(Deploy).where(Deploy.id == deploy_id).values(**values))


@pytest.fixture
def harness(engine: Engine, settings: Settings, origin: GitRepo) -> Iterator[Harness]:
    with recording_server() as hook:
        yield Harness(engine, settings, origin, hook)


def test_successful_deploy_passes_variables_safely_and_cleans_up(
    harness: Harness, tmp_path: Path
) -> None:
    hostile = f"$(touch {tmp_path}/m1) `touch {tmp_path}/m2`; touch {tmp_path}/m3 '\""
    app = harness.app(
        'echo "vars {app} {environment} {ref} {number} {prev_sha}|{params[greeting]}"; '
        'echo "env $FREIGHT_APP $FREIGHT_ENVIRONMENT $FREIGHT_SHA $FREIGHT_NUMBER '
        '$FREIGHT_PARAM_GREETING"; '
        'echo "sha {sha}"; pwd; cat README; echo s3cr3t-api-key; '
        'echo "more $FREIGHT_REF $FREIGHT_USER $FREIGHT_WORKSPACE {workspace} '
        '$(git rev-parse HEAD)"'
    )
    deploy_id = harness.create(app, greeting=hostile)
    assert harness.execute(deploy_id) == DeployStatus.FINISHED

    deploy = harness.deploy(deploy_id)
    text = log_text(harness.engine, deploy_id)
    assert f"vars {app} staging main 1 |{hostile}\n" in text
    assert f"env {app} staging {deploy.sha} 1 {hostile}\n" in text
    assert f"sha {deploy.sha}\n" in text
    workspace = f"{harness.settings.workspaces}/checkouts/{deploy_id}"
    assert f"more main ana {workspace} {workspace} {deploy.sha}\n" in text
    assert f"{harness.settings.workspaces}/checkouts/{deploy_id}\nhello\n" in text
    assert "s3cr3t-api-key" not in text and "********" in text
    assert text.startswith(f">> Deploying {app}/staging#1: main ({deploy.sha}) by ana\n")
    assert not list(tmp_path.glob("m?"))
    assert deploy.status == DeployStatus.FINISHED and deploy.date_finished is not None
    assert not (harness.settings.workspaces / "checkouts" / str(deploy_id)).exists()
    mirror = vcs.mirror_path(harness.settings.workspaces, harness.origin.url)
    assert harness.origin.git("-C", str(mirror), "worktree", "list").count("\n") == 0
    events = [r.json() for r in harness.hook.requests]
    assert [e["event"] for e in events] == ["queued", "started", "finished"]
    expected = {
        "event": "finished",
        "name": f"{app}/staging#1",
        "app": app,
        "env": "staging",
        "number": 1,
        "ref": "main",
        "sha": deploy.sha,
        "status": "finished",
        "user": "ana",
        "link": f"http://freight.test/deploys/{app}/staging/1/",
        "reason": None,
        "previous_sha": None,
        "params": {"greeting": hostile},
        "app_name": app,
        "deploy_number": 1,
        "title": f"{app}/staging#1",
    }
    assert {key: events[-1][key] for key in expected} == expected
    assert events[-1]["duration"] > 0 and events[-1]["date_finished"].endswith("Z")


def test_failing_command_fails_the_deploy_and_removes_the_workspace(harness: Harness) -> None:
    deploy_id = harness.create(harness.app("echo about to fail; exit 3"))
    assert harness.execute(deploy_id) == DeployStatus.FAILED
    deploy = harness.deploy(deploy_id)
    assert deploy.reason == "Command exited with status 3"
    text = log_text(harness.engine, deploy_id)
    assert "about to fail\n>> Command exited with status 3\n" in text
    assert not (harness.settings.workspaces / "checkouts" / str(deploy_id)).exists()
    assert [r.json()["event"] for r in harness.hook.requests][-1] == "failed"


@pytest.mark.parametrize(
    ("provider", "line"),
    [
        ({"timeout": 1}, ">> Process exceeded time limit of 1s"),
        ({"read_timeout": 1}, ">> Process produced no output for 1s"),
    ],
)
def test_time_limits_fail_the_deploy_and_kill_the_group(
    harness: Harness, provider: dict[str, float], line: str, marker: str
) -> None:
    deploy_id = harness.create(
        harness.app("echo started; sleep 30 & sleep 30", provider=provider), marker=marker
    )
    assert harness.execute(deploy_id) == DeployStatus.FAILED
    assert line in log_text(harness.engine, deploy_id)
    assert harness.deploy(deploy_id).reason == line.removeprefix(">> ")
    assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []


def test_cancel_running_deploy_kills_grandchild_that_ignores_sigterm(
    harness: Harness, marker: str
) -> None:
    app = harness.app("""bash -c 'trap "" TERM; sleep 600' & echo waiting; wait""")
    deploy_id = harness.create(app, marker=marker)
    outcome: list[DeployStatus] = []
    thread = threading.Thread(target=lambda: outcome.append(harness.execute(deploy_id)))
    thread.start()
    wait_for(lambda: "waiting\n" in log_text(harness.engine, deploy_id), what="command output")
    wait_for(
        lambda: len(live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}")) >= 2, what="grandchild"
    )
    harness.handover.cancel(deploy_id, by="bob")
    thread.join(timeout=20)
    assert outcome == [DeployStatus.CANCELLED]
    assert live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == []
    text = log_text(harness.engine, deploy_id)
    assert ">> Cancel requested by bob\n" in text
    assert ">> Sent SIGTERM to process group" in text and ">> Sent SIGKILL to process group" in text
    assert harness.deploy(deploy_id).reason == "Cancelled by bob"
    assert not (harness.settings.workspaces / "checkouts" / str(deploy_id)).exists()
    assert [r.json()["event"] for r in harness.hook.requests] == ["queued", "started", "cancelled"]


def test_ten_thousand_lines_arrive_once_in_order_with_contiguous_offsets(harness: Harness) -> None:
    deploy_id = harness.create(harness.app("seq 1 10000"))
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    lines = contiguous_log(harness.engine, deploy_id).splitlines()
    numbers = [line for line in lines if not line.startswith(">> ")]
    assert numbers == [str(n) for n in range(1, 10001)]


def test_a_line_is_readable_before_the_command_ends(harness: Harness, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    app = harness.app(
        "echo first; for i in 1 2 3; do sleep 0.2; echo slow $i; done; "
        "while [ ! -f {params[gate]} ]; do sleep 0.05; done; echo last"
    )
    deploy_id = harness.create(app, gate=str(gate))
    thread = threading.Thread(target=harness.execute, args=(deploy_id,))
    thread.start()
    wait_for(lambda: "slow 3\n" in log_text(harness.engine, deploy_id), what="slow lines")
    assert "\nlast\n" not in log_text(harness.engine, deploy_id)
    gate.write_text("open")
    thread.join(timeout=10)
    assert "first\nslow 1\nslow 2\nslow 3\nlast\n" in contiguous_log(harness.engine, deploy_id)


def test_lock_refuses_others_and_lets_its_owner_deploy(harness: Harness) -> None:
    app = harness.app("echo ok")
    blocked = harness.create(app, user="bob")
    with session_scope(harness.engine) as session:
        app_id = harness.deploy(blocked).app_id
        session.add(Lock(app_id=app_id, environment="staging", reason="migration", owner="ana"))
    # Locked while it waited: it never ran, so it is cancelled (by the lock), not failed.
    assert harness.execute(blocked) == DeployStatus.CANCELLED
    refused = harness.deploy(blocked)
    assert refused.reason == f"Not run: {app}/staging is locked by ana: migration"
    assert refused.cancelled_by == AppLocked.refused_by
    assert [r.json()["event"] for r in harness.hook.requests][-1] == "cancelled"
    owner = harness.create(app, user="ana")
    assert harness.execute(owner) == DeployStatus.FINISHED


def test_finished_deploy_hands_the_slot_to_the_next_in_queue(harness: Harness) -> None:
    app = harness.app("echo ok")
    first, second = harness.create(app), harness.create(app)
    assert harness.orchestrator.submitted == [first]
    assert harness.execute(first) == DeployStatus.FINISHED
    assert harness.orchestrator.submitted == [first, second]
    assert harness.deploy(second).status == DeployStatus.IN_PROGRESS
    assert harness.deploy(second).claim != harness.deploy(first).claim


def started(harness: Harness, deploy_id: int, *, runner_pid: int, heartbeat_age: float) -> None:
    """What a runner that began the deploy and then went silent leaves in its row."""
    harness.age(
        deploy_id,
        date_claimed=utcnow() - timedelta(seconds=heartbeat_age + 2),
        date_started=utcnow() - timedelta(seconds=heartbeat_age + 1),
        heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age),
        runner_host=socket.gethostname(),
        runner_pid=runner_pid,
    )


def dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_reconciler_fails_a_silent_run_stops_its_group_removes_its_checkout_and_hands_on(
    harness: Harness,
) -> None:
    app = harness.app("echo ok")
    lost, queued = harness.create(app), harness.create(app)
    deploy = harness.deploy(lost)
    assert deploy.flow_run_id and deploy.sha
    workspace = harness.settings.workspaces / "checkouts" / str(lost)
    mirror = vcs.mirror_with(
        harness.settings.workspaces,
        harness.origin.url,
        deploy.sha,
        access=harness.settings.git_access(),
    )
    vcs.add_worktree(mirror, deploy.sha, workspace)
    harness.orchestrator.states[deploy.flow_run_id] = RunState.RUNNING
    # What a killed runner leaves behind: its command's group, still running; and a stranger's
    # group that happens to have the recorded id of another deploy.
    orphan = subprocess.Popen(
        ["bash", "-c", "sleep 600 & wait"],
        env={**os.environ, "FREIGHT_DEPLOY_ID": str(lost)},
        start_new_session=True,
    )
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    started(harness, lost, runner_pid=dead_pid(), heartbeat_age=120)
    harness.age(lost, runner_pgid=orphan.pid, workspace=str(workspace))
    harness.age(queued, runner_host=socket.gethostname(), runner_pgid=stranger.pid)
    try:
        done = harness.reconciler().pass_once()
        assert orphan.wait(5) < 0
        assert procs.group_members(orphan.pid) == []
        assert stranger.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan.pid, signal.SIGKILL)
        stranger.kill()
        stranger.wait()
    assert done.ended == [f"{app}/staging#1"]
    failed = harness.deploy(lost)
    assert failed.status == DeployStatus.FAILED and failed.reason.startswith("Runner lost")
    assert failed.claim is None
    assert not workspace.exists()
    assert harness.orchestrator.crashed == [deploy.flow_run_id]
    assert harness.deploy(queued).status == DeployStatus.IN_PROGRESS
    assert harness.reconciler().pass_once().ended == []  # once


def test_reconciler_leaves_runs_waiting_for_a_worker_alone(harness: Harness) -> None:
    deploy_id = harness.create(harness.app("echo ok"))
    long_ago = utcnow() - timedelta(seconds=120)
    harness.age(deploy_id, heartbeat_at=long_ago, date_claimed=long_ago)
    done = harness.reconciler().pass_once()
    assert done.ended == [] and done.replaced == []
    assert harness.deploy(deploy_id).status == DeployStatus.IN_PROGRESS


def test_a_run_no_worker_serves_waits_saying_why_until_one_does(harness: Harness) -> None:
    app = harness.app("echo ok", work_queue="prod-net")
    deploy_id = harness.create(app)
    [submission] = harness.orchestrator.submissions
    assert submission.work_queue == "prod-net"  # only the workers serving it may run it
    everyday = harness.create(harness.app("echo ok"))

    def beat(name: str, queues: list[str], state: WorkerState = WorkerState.RUNNING) -> None:
        with session_scope(harness.engine) as session:
            workers.report(
                session, name, limit=2, queues=queues, pid=1, state=state, started=utcnow()
            )

    beat("h1", ["deploys"])
    beat("h2", ["deploys", "prod-net"])
    with session_scope(harness.engine) as session:
        silent = utcnow() - timedelta(seconds=60)  # h2 went silent a minute ago: lost
        session.execute(update(Worker).where(Worker.name == "h2").values(heartbeat_at=silent))
    reconciler = harness.reconciler()
    why = "no worker serves work queue 'prod-net' (h2 is lost)"
    assert reconciler.pass_once().waiting == [f"{app}/staging#1: {why}"]
    assert harness.deploy(deploy_id).waiting_for == why
    assert harness.deploy(everyday).waiting_for is None  # h1 serves its queue
    assert reconciler.pass_once().waiting == []  # said once
    assert log_text(harness.engine, deploy_id).count(f">> Waiting: {why}") == 1
    beat("h2", ["prod-net"])
    reconciler.pass_once()
    assert harness.deploy(deploy_id).waiting_for is None
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    # One that ends while it waits (cancelled, say) no longer says it waits.
    stranded = harness.create(app)
    reconciler.pass_once()
    beat("h2", ["prod-net"], WorkerState.STOPPED)
    reconciler.pass_once()
    assert (
        harness.deploy(stranded).waiting_for
        == "no worker serves work queue 'prod-net' (h2 is stopped)"
    )
    harness.handover.cancel(stranded, by="ana")
    assert harness.deploy(stranded).waiting_for is None


def test_failing_notifier_is_retried_and_never_fails_the_deploy(harness: Harness) -> None:
    # queued: two failures then success; started: fails on every attempt; finished: fine.
    harness.hook.statuses = [500, 503, 200, 500, 500, 500]
    deploy_id = harness.create(harness.app("echo ok"))
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    events = [r.json()["event"] for r in harness.hook.requests]
    assert events == ["queued", "queued", "queued", "started", "started", "started", "finished"]
    text = log_text(harness.engine, deploy_id)
    assert "answered 500, retrying" in text
    assert ">> Notifier webhook failed on 'started': Webhook" in text
    assert "(giving up)" in text


def test_a_run_waiting_behind_another_announces_queued_before_its_turn(harness: Harness) -> None:
    app = harness.app("echo ok")
    first = harness.create(app)  # holds the slot; its runner has not started yet
    second, run_id = harness.register(app)
    outcome: list[DeployStatus | None] = []

    def run_second() -> None:
        outcome.append(harness.run_registered(second, run_id))

    thread = threading.Thread(target=run_second, daemon=True)
    thread.start()
    wait_for(
        lambda: (
            [(r.json()["number"], r.json()["event"]) for r in harness.hook.requests]
            == [(2, "queued")]
        ),
        what="the queued notice of the waiting deploy",
    )
    assert harness.deploy(second).status == DeployStatus.PENDING
    wait_for(
        lambda: f">> Waiting for {app}/staging#1 to finish" in log_text(harness.engine, second),
        what="the waiting line",
    )
    assert harness.execute(first) == DeployStatus.FINISHED
    thread.join(timeout=20)
    assert outcome == [DeployStatus.FINISHED]
    second_events = [r.json()["event"] for r in harness.hook.requests if r.json()["number"] == 2]
    assert second_events == ["queued", "started", "finished"]


def test_secret_references_resolve_at_run_time_and_are_masked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FREIGHT_TEST_TOKEN", "tok-9f8e7d")
    app = harness.app(
        'test "$TOKEN" = tok-9f8e7d && echo "token ok: $TOKEN"',
        provider={"env": {"TOKEN": "${FREIGHT_TEST_TOKEN}"}},
    )
    deploy_id = harness.create(app)
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    text = log_text(harness.engine, deploy_id)
    assert "token ok: ********\n" in text and "tok-9f8e7d" not in text
    with session_scope(harness.engine) as session:  # stored as a reference, never resolved
        assert deploys.get_deploy(session, deploy_id).config["provider"]["env"] == {
            "TOKEN": "${FREIGHT_TEST_TOKEN}"
        }

    monkeypatch.delenv("FREIGHT_TEST_TOKEN")
    missing = harness.create(app)
    assert harness.execute(missing) == DeployStatus.FAILED
    assert harness.deploy(missing).reason == (
        "Secret 'FREIGHT_TEST_TOKEN' is not set where the deploy runs (its environment)"
    )


class Interrupted(BaseException):
    """Stands in for Prefect's TerminationSignal, raised by a signal handler in the main thread."""


def test_a_signal_while_queued_cancels_the_deploy_and_leaves_the_queue_intact(
    harness: Harness,
) -> None:
    app = harness.app("echo ok")
    first = harness.create(app)  # holds the slot
    second, run_id = harness.register(app)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(Interrupted):
            harness.run_registered(second, run_id)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    cancelled = harness.deploy(second)
    assert cancelled.status == DeployStatus.CANCELLED
    assert cancelled.reason == "Cancelled by Prefect"
    assert harness.deploy(first).status == DeployStatus.IN_PROGRESS
    assert [r.json()["event"] for r in harness.hook.requests] == ["queued", "cancelled"]


def test_checks_gate_the_deploy_and_force_skips_them(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class GateConfig(PluginConfig):
        type: Literal["gate"] = "gate"
        path: str

    class Gate:
        def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
            assert isinstance(config, GateConfig)
            if not Path(config.path).exists():
                return CheckResult(Verdict.FAILED, f"[failure] gate: {config.path} is closed")
            return CheckResult(Verdict.PASSED)

    monkeypatch.setitem(checks.registry._kinds, "gate", (GateConfig, Gate()))
    app = harness.app("echo deployed", checks=[{"type": "gate", "path": str(tmp_path / "open")}])
    refused = harness.create(app)
    assert harness.execute(refused) == DeployStatus.FAILED
    assert (
        harness.deploy(refused).reason
        == f"Check gate failed: [failure] gate: {tmp_path}/open is closed"
    )
    assert "deployed" not in log_text(harness.engine, refused).replace("echo deployed", "")

    forced = harness.create(app, force=True)
    assert harness.execute(forced) == DeployStatus.FINISHED
    assert ">> Checks skipped: deploy forced\n" in log_text(harness.engine, forced)

    (tmp_path / "open").touch()
    passed = harness.create(app)
    assert harness.execute(passed) == DeployStatus.FINISHED
    assert ">> Running check gate\n" in log_text(harness.engine, passed)


def test_reconciler_spares_a_late_heartbeat_whose_runner_works_here(harness: Harness) -> None:
    """A loaded machine can delay heartbeats; a runner process seen working is not lost. A
    stopped one (SIGSTOP, a paused VM) can keep no promise: it is."""
    deploy_id = harness.create(harness.app("echo ok"))
    run_id = harness.deploy(deploy_id).flow_run_id
    assert run_id
    harness.orchestrator.states[run_id] = RunState.RUNNING
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        started(harness, deploy_id, runner_pid=sleeper.pid, heartbeat_age=120)
        assert harness.reconciler().pass_once().ended == []
        assert harness.deploy(deploy_id).status == DeployStatus.IN_PROGRESS
        sleeper.send_signal(signal.SIGSTOP)
        wait_for(lambda: not procs.is_working(sleeper.pid), what="the runner to stop")
        assert harness.reconciler().pass_once().ended == [harness.deploy(deploy_id).name]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_late_hand_over_of_a_run_that_already_ran_its_deploy_leaves_that_run_alone(
    harness: Harness,
) -> None:
    """The API died after making the run and before noting it; the reconciler hands the claim
    over again, and while Prefect is slow to answer, a worker runs the run to the end."""
    deploy_id = harness.create(harness.app("echo ok"))
    harness.age(deploy_id, flow_run_id=None)
    answer = harness.orchestrator.submit

    def slow_answer(submission: Submission) -> str:
        run_id = answer(submission)  # the same run: one per claim
        ran = run_inline(
            harness.settings, harness.handover, deploy_id, run_id=run_id, claim=submission.claim
        )
        assert ran == DeployStatus.FINISHED
        return run_id

    harness.orchestrator.submit = slow_answer  # type: ignore[method-assign]
    harness.handover.resubmit(deploy_id)
    assert harness.orchestrator.cancelled == []  # the run that did the deploy is not cancelled
    assert harness.deploy(deploy_id).status == DeployStatus.FINISHED


def test_a_claim_whose_hand_over_was_lost_is_handed_over_again_once(harness: Harness) -> None:
    app = harness.app("echo ok")
    harness.orchestrator.down = True  # the hand-over fails: Prefect is away
    deploy_id = harness.create(app)
    assert harness.orchestrator.submitted == []
    claimed = harness.deploy(deploy_id)
    assert claimed.status == DeployStatus.IN_PROGRESS and claimed.flow_run_id is None

    # Just claimed: its hand-over may still be under way; and Prefect is still away.
    done = harness.reconciler().pass_once()
    assert done.submitted == [] and done.ended == []
    harness.age(deploy_id, date_claimed=utcnow() - timedelta(seconds=5))
    harness.reconciler().pass_once()
    assert harness.deploy(deploy_id).status == DeployStatus.IN_PROGRESS

    harness.orchestrator.down = False
    assert harness.reconciler().pass_once().submitted == [claimed.name]
    assert harness.reconciler().pass_once().submitted == []
    assert harness.orchestrator.submitted == [deploy_id]
    handed = harness.deploy(deploy_id)
    assert handed.claim == claimed.claim and handed.flow_run_id is not None
    assert harness.execute(deploy_id) == DeployStatus.FINISHED


def test_a_run_prefect_lost_before_it_started_is_replaced_a_few_times(harness: Harness) -> None:
    deploy_id = harness.create(harness.app("echo ok"))
    claims = []
    for attempt in range(1, MAX_HAND_OVERS + 1):
        deploy = harness.deploy(deploy_id)
        assert deploy.hand_overs == attempt and deploy.claim not in claims
        claims.append(deploy.claim)
        assert deploy.flow_run_id
        # Prefect's worker could not start it and reported it crashed.
        harness.orchestrator.states[deploy.flow_run_id] = RunState.ENDED
        done = harness.reconciler().pass_once()
        if attempt < MAX_HAND_OVERS:
            assert done.ended == [] and done.replaced == [deploy.name]
            assert harness.deploy(deploy_id).status == DeployStatus.IN_PROGRESS
    assert harness.orchestrator.submitted == [deploy_id] * MAX_HAND_OVERS
    assert done.ended == [harness.deploy(deploy_id).name]
    lost = harness.deploy(deploy_id)
    assert lost.status == DeployStatus.FAILED
    assert lost.reason == f"Its run was lost {MAX_HAND_OVERS} times before it started"


def test_a_deploy_that_ran_leaves_release_notes_with_its_commits(harness: Harness) -> None:
    app = harness.app("echo ok")
    first = harness.create(app)
    assert harness.execute(first) == DeployStatus.FINISHED
    harness.origin.commit("Fix the login | page", {"login.txt": "fixed"})
    harness.origin.commit("Add a banner")
    second = harness.create(app)
    assert harness.execute(second) == DeployStatus.FINISHED
    notes = harness.orchestrator.releases[-1]
    deploy = harness.deploy(second)
    assert notes.key == f"release-{app}-staging"
    assert notes.description == f"{app}/staging#2: finished at {deploy.sha[:7]}"
    assert f"## {app}/staging#2 finished" in notes.markdown
    assert f"| previous sha | `{harness.deploy(first).sha}` |" in notes.markdown
    assert "| by | ana |" in notes.markdown and "### Commits (2)" in notes.markdown
    assert "Fix the login / page (Ana Dev)" in notes.markdown
    assert len(harness.orchestrator.releases) == 2


def test_maintenance_marks_locks_that_ran_out_and_announces_them(harness: Harness) -> None:
    app = harness.app("echo ok")
    with session_scope(harness.engine) as session:
        lock = locks.create_lock(
            session,
            app=app,
            environment="staging",
            reason="load test",
            owner="ana",
            expires=utcnow() + timedelta(hours=1),
        )
        lock_id = lock.id
    assert harness.maintain().expired_locks == []
    with session_scope(harness.engine) as session:
        session.get_one(Lock, lock_id).date_expires = utcnow() - timedelta(seconds=1)
    assert harness.maintain().expired_locks == [f"{app}/staging"]
    with session_scope(harness.engine) as session:
        expired = session.get_one(Lock, lock_id)
        assert expired.released_by == "expired" and expired.date_released == expired.date_expires
    (notice,) = [r.json() for r in harness.hook.requests if r.json()["event"] == "expired"]
    assert notice["title"] == f"{app}/staging unlocked: the lock by ana expired (load test)"
    assert harness.maintain().expired_locks == []  # once


def test_release_state_follows_deploys_a_failure_and_a_rollback(harness: Harness) -> None:
    app = harness.app("if [ -f broken ]; then echo broken; exit 3; fi; echo ok {sha}")
    one_sha = harness.origin.git("rev-parse", "HEAD")
    one = harness.create(app)
    assert harness.execute(one) == DeployStatus.FINISHED
    two_sha = harness.origin.commit("Add caching")
    two = harness.create(app)
    assert harness.execute(two) == DeployStatus.FINISHED
    three_sha = harness.origin.commit("Break the build", {"broken": "yes"})
    three = harness.create(app)
    assert harness.execute(three) == DeployStatus.FAILED
    back = harness.create(app, ref=":previous", user="bob")
    assert harness.execute(back) == DeployStatus.FINISHED

    with session_scope(harness.engine) as session:
        (state,) = [r for r in releases.release_state(session, app) if r.environment == "staging"]
        assert state.live is not None and state.live.id == back
        assert (state.live.sha, state.live.prev_sha, state.live.user.name) == (
            one_sha,
            two_sha,
            "bob",
        )
        assert state.running is None and state.queued == 0
        # What was live, newest first: the failed deploy never was.
        assert [d.id for d in releases.history(session, app=app, environment="staging")] == [
            back,
            two,
            one,
        ]
        assert releases.previous_sha(session, state.live.app_id, "staging") == two_sha
        failed = deploys.get_deploy(session, three)
        assert (failed.sha, failed.reason) == (three_sha, "Command exited with status 3")
        for deploy_id in (one, two, three, back):
            duration = deploys.get_deploy(session, deploy_id).duration
            assert duration is not None and duration > 0
    start, end, shipped = refs.commits_between(
        harness.engine,
        app=app,
        environment="staging",
        start=None,
        end=None,
        workspace_root=harness.settings.workspaces,
        git=harness.settings.git_access(),
    )
    # Deploying the branch again would ship both commits after the rolled-back-to one.
    assert (start, end) == (one_sha, three_sha)
    assert [(c.sha, c.subject) for c in shipped] == [
        (three_sha, "Break the build"),
        (two_sha, "Add caching"),
    ]
    notes = harness.orchestrator.releases[-1]
    assert notes.description == f"{app}/staging#4: finished at {one_sha[:7]}"
    assert f"| previous sha | `{two_sha}` |" in notes.markdown
    assert "### Rolled back (1)" in notes.markdown and "Add caching (Ana Dev)" in notes.markdown


def test_forcing_past_a_lock_from_prefect_needs_a_reason_too(harness: Harness) -> None:
    app = harness.app("echo ok")
    with session_scope(harness.engine) as session:
        locks.create_lock(session, app=app, environment="staging", reason="audit", owner="ana")

    def forced(reason: str | None) -> tuple[int, DeployStatus | None]:
        deploy_id, run_id = harness.register(app, force=True, reason=reason)
        return deploy_id, harness.run_registered(deploy_id, run_id)

    bare, status = forced(None)
    assert status == DeployStatus.CANCELLED
    assert harness.deploy(bare).reason == (
        f"Not run: {app}/staging is locked by ana: audit: forcing past it needs a reason"
    )
    explained, status = forced("hotfix for the outage")
    assert status == DeployStatus.FINISHED
    assert (
        f">> Forced past: {app}/staging is locked by ana: audit. Reason: hotfix for the outage\n"
        in log_text(harness.engine, explained)
    )
    finished = [r.json() for r in harness.hook.requests if r.json()["event"] == "finished"]
    assert finished[-1]["force_reason"] == "hotfix for the outage"
    assert finished[-1]["forced_past"] == f"{app}/staging is locked by ana: audit"


def test_a_runner_whose_claim_was_taken_stops_its_command_and_writes_nothing_more(
    harness: Harness, marker: str
) -> None:
    app = harness.app("echo started; sleep 600 & wait")
    deploy_id = harness.create(app, marker=marker)
    run_id = harness.deploy(deploy_id).flow_run_id
    assert run_id
    outcome: list[DeployStatus | None] = []
    thread = threading.Thread(target=lambda: outcome.append(harness.execute(deploy_id)))
    thread.start()
    wait_for(lambda: "started\n" in log_text(harness.engine, deploy_id), what="the command")
    wait_for(lambda: live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}"), what="its group")
    harness.orchestrator.states[run_id] = RunState.RUNNING
    # The reconciler takes it for lost: its runner seems to be on another host, silent for two
    # minutes (a network partition), so only the runner itself can stop the command.
    harness.age(deploy_id, runner_host="elsewhere")
    later = Reconciler(
        harness.handover,
        timing=Timing(lost_after=30, submit_after=3, pending_for=20, worker_beat=2),
        workspace_root=harness.settings.workspaces,
        grace=1,
        clock=lambda: utcnow() + timedelta(seconds=120),
    )
    assert later.pass_once().ended == [f"{app}/staging#1"]
    reaped = log_text(harness.engine, deploy_id)
    assert reaped.endswith(">> Runner lost (last heartbeat " + reaped.rsplit("heartbeat ", 1)[1])
    wait_for(
        lambda: live_pids_with_env(f"FREIGHT_PARAM_MARKER={marker}") == [],
        5,
        "the fenced runner to kill its command's group",
    )
    thread.join(timeout=20)
    assert outcome == [None]  # not its deploy to record any more
    assert log_text(harness.engine, deploy_id) == reaped
    failed = harness.deploy(deploy_id)
    assert failed.status == DeployStatus.FAILED and failed.reason.startswith("Runner lost")
    assert not (harness.settings.workspaces / "checkouts" / str(deploy_id)).exists()


def test_a_nul_in_the_output_is_stored_visible_and_the_deploy_goes_on(harness: Harness) -> None:
    app = harness.app(r"printf 'before\n\000middle\nafter\n'")
    deploy_id = harness.create(app)
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    assert "before\n\\x00middle\nafter\n" in contiguous_log(harness.engine, deploy_id)


def test_a_secret_is_masked_however_the_command_prints_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "tok-9f8e7d"
    monkeypatch.setenv("FREIGHT_TEST_TOKEN", secret)
    printing = "; ".join(
        [
            # Redrawn with carriage returns, as progress bars are; the secret whole in one draw.
            r"""printf 'step 1/2\rtoken %s\r\n' "$TOKEN" """,
            # Split around a carriage return: a renderer dropping it must not join the pieces.
            r"printf 'tok-9f\r8e7d\n'",
            # Split across two writes, the second one later.
            "printf 'split tok-9f'; sleep 0.3; printf '8e7d\\n'",
            # Across the boundary of the runner's 64 KiB reads.
            "python3 -c \"import os; print('a' * (65536 - 4) + os.environ['TOKEN'])\"",
        ]
    )
    app = harness.app(printing, provider={"env": {"TOKEN": "${FREIGHT_TEST_TOKEN}"}})
    deploy_id = harness.create(app)
    assert harness.execute(deploy_id) == DeployStatus.FINISHED
    text = contiguous_log(harness.engine, deploy_id)
    assert "step 1/2\ntoken ********\n" in text
    assert "split ********\n" in text
    assert "a" * (65536 - 4) + "********\n" in text
    # The pieces around a carriage return are lines of their own: a reader that drops the
    # carriage returns cannot join them into the secret.
    assert "tok-9f\n8e7d\n" in text
    assert secret not in text.replace("\r", "")


def test_a_command_runs_as_its_own_user_with_its_own_files_and_secrets_only(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reachable_by_others(tmp_path)
    system_users.ensure_user(system_users.DEPLOY_USER, "for deploy commands")
    isolated = harness.settings.model_copy(update={"run_as": system_users.DEPLOY_USER})
    guard_home(isolated)
    monkeypatch.setenv("FREIGHT_TEST_TOKEN", "tok-mine")
    monkeypatch.setenv("OTHER_APP_TOKEN", "tok-of-another-app")
    app = harness.app(
        'echo "as $(id -un) home=$HOME tmp=$TMPDIR"; env; '
        'touch made-here "$TMPDIR/made-there"; stat -c "%U" . "$TMPDIR/made-there"',
        provider={"env": {"TOKEN": "${FREIGHT_TEST_TOKEN}"}},
    )
    deploy_id = harness.create(app)
    deploy = harness.deploy(deploy_id)
    assert deploy.flow_run_id and deploy.claim
    status = run_inline(
        isolated, harness.handover, deploy_id, run_id=deploy.flow_run_id, claim=deploy.claim
    )
    text = log_text(harness.engine, deploy_id)
    assert status == DeployStatus.FINISHED, text
    temp = isolated.workspaces / "tmp" / str(deploy_id)
    assert f">> The command runs as {system_users.DEPLOY_USER}\n" in text
    assert f"as {system_users.DEPLOY_USER} home={temp} tmp={temp}\n" in text
    assert f"{system_users.DEPLOY_USER}\n{system_users.DEPLOY_USER}\n" in text  # owns both
    assert "TOKEN=********" in text and "tok-of-another-app" not in text
    assert not temp.exists() and not (isolated.workspaces / "checkouts" / str(deploy_id)).exists()

    # Without a user to switch to, every deploy's log says what that means.
    second = harness.create(app)
    assert harness.execute(second) == DeployStatus.FINISHED
    assert ">> WARNING: deploy commands run as root, Freight's own user, and can read its " in (
        log_text(harness.engine, second)
    )
