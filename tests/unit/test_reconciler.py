"""The reconciler's decisions, as plain functions, and a pass of it on an in-memory database
with a recording engine: what it repairs, and what it leaves alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from freight import vcs
from freight.catalogue import AppSpec
from freight.db import AppSource, Deploy, DeployStatus, Lease, session_scope, utcnow
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.execution.ports import RunState, RunStatus
from freight.execution.reconciler import (
    MAX_HAND_OVERS,
    AskToStop,
    Claimed,
    End,
    Reconciler,
    Replace,
    Submit,
    Timing,
    Wait,
    decide,
)
from freight.service import apps, deploys, leases
from tests.factories import RecordingOrchestrator

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TIMING = Timing(lost_after=15, submit_after=3, pending_for=20, worker_beat=2)
LONG_AGO = datetime.min.replace(tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


CLAIMED = Claimed(
    deploy_id=7,
    name="web/production#7",
    app_id=1,
    environment="production",
    claim="c1",
    run_id="r1",
    date_claimed=ago(60),
    heartbeat_at=ago(60),
    date_started=None,
    hand_overs=1,
    cancel_requested=False,
    runner_host="h",
    runner_pid=None,
    work_queue="deploys",
    waiting_for=None,
)
RUNNING = replace(CLAIMED, date_started=ago(59), heartbeat_at=ago(1))


def judge(
    deploy: Claimed,
    run: RunStatus | None,
    *,
    working: bool = False,
    watching_since: datetime = LONG_AGO,
) -> object:
    return decide(
        deploy,
        run,
        now=NOW,
        timing=TIMING,
        watching_since=watching_since,
        runner_working=working,
    )


def test_a_claim_without_a_run_is_handed_over_again_once_its_hand_over_had_time() -> None:
    fresh = replace(CLAIMED, run_id=None, date_claimed=ago(1))
    assert judge(fresh, None) == Wait()
    assert judge(replace(fresh, date_claimed=ago(4)), None) == Submit()


@pytest.mark.parametrize("state", [RunState.SCHEDULED, RunState.PENDING])
def test_a_run_waiting_for_a_worker_is_left_alone_however_long(state: RunState) -> None:
    assert judge(CLAIMED, RunStatus(state, ago(600))) == Wait()


def test_a_run_the_engine_lost_before_it_started_is_replaced_a_few_times_then_fails() -> None:
    for state in (RunState.ENDED, RunState.MISSING):
        assert judge(CLAIMED, RunStatus(state)) == Replace()
    worn = replace(CLAIMED, hand_overs=MAX_HAND_OVERS)
    assert judge(worn, RunStatus(RunState.ENDED)) == End(
        DeployStatus.FAILED, f"Its run was lost {MAX_HAND_OVERS} times before it started"
    )


def test_a_run_cancelled_in_prefect_before_it_started_cancels_the_deploy() -> None:
    assert judge(CLAIMED, RunStatus(RunState.CANCELLED)) == End(
        DeployStatus.CANCELLED, "Cancelled in Prefect before it started"
    )


def test_a_running_run_whose_runner_never_began_is_replaced_once_silent() -> None:
    assert judge(CLAIMED, RunStatus(RunState.RUNNING, ago(5))) == Wait()
    assert judge(CLAIMED, RunStatus(RunState.RUNNING, ago(30))) == Replace()


def test_a_started_deploy_is_lost_when_its_heartbeat_is_silent_and_no_runner_works_here() -> None:
    running = RunStatus(RunState.RUNNING, ago(59))
    assert judge(RUNNING, running) == Wait()
    silent = replace(RUNNING, heartbeat_at=ago(16))
    decision = judge(silent, running)
    assert isinstance(decision, End) and decision.status == DeployStatus.FAILED
    assert decision.reason == f"Runner lost (last heartbeat {ago(16).isoformat()})"
    assert judge(silent, running, working=True) == Wait()  # a slow beat on a loaded machine
    assert judge(silent, None) == decision  # the engine away: the heartbeat alone decides


def test_a_run_that_ended_without_recording_its_deploy_is_lost_at_once() -> None:
    for state in (RunState.ENDED, RunState.CANCELLED, RunState.MISSING):
        decision = judge(RUNNING, RunStatus(state))
        assert isinstance(decision, End) and decision.reason.startswith("Runner lost")


def test_heartbeats_are_not_judged_until_the_reconciler_has_seen_them_long_enough() -> None:
    """After the database was away (nobody could beat), silence counts from its return."""
    silent = replace(RUNNING, heartbeat_at=ago(60))
    running = RunStatus(RunState.RUNNING, ago(59))
    assert judge(silent, running, watching_since=ago(10)) == Wait()
    assert isinstance(judge(silent, running, watching_since=ago(16)), End)


def test_a_run_cancelled_in_prefects_ui_asks_the_deploy_to_stop_once() -> None:
    cancelling = RunStatus(RunState.CANCELLING, ago(1))
    assert judge(RUNNING, cancelling) == AskToStop()
    assert judge(replace(RUNNING, cancel_requested=True), cancelling) == Wait()


# -- a whole pass, on an in-memory database ---------------------------------------------------


@pytest.fixture
def path(memory_engine: Engine, tmp_path: Path) -> HandOver:
    with session_scope(memory_engine) as session:
        spec = AppSpec.model_validate(
            {
                "name": "web",
                "repository": str(tmp_path / "web.git"),
                "provider": {"type": "shell", "command": "true"},
                "environments": {"production": {"default_ref": "main"}},
            }
        )
        apps.save_app(session, spec, source=AppSource.API)
    return HandOver(
        memory_engine,
        RecordingOrchestrator(),
        workspace_root=tmp_path,
        git=vcs.Access(allow_local=True),
    )


def reconciler(path: HandOver, clock: datetime | None = None) -> Reconciler:
    return Reconciler(
        path,
        timing=TIMING,
        workspace_root=path.workspace_root,
        grace=0,
        host="here",
        clock=utcnow if clock is None else (lambda: clock),
    )


def ask(path: HandOver, sha: str) -> int:
    return path.request(
        DeployRequest(app="web", environment="production", user="ana", sha=sha, ref="main")
    ).deploy_id


def test_a_pass_hands_over_idle_queues_and_lost_claims_and_fails_dead_runners(
    path: HandOver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("freight.vcs.mirror_with", lambda *args, **kwargs: Path())
    engine = path.engine
    recorder = path.orchestrator
    assert isinstance(recorder, RecordingOrchestrator)
    recorder.down = True  # the API's hand-over fails: a claim without a run
    first = ask(path, "a" * 40)
    second = ask(path, "b" * 40)
    recorder.down = False
    later = datetime.now(UTC) + timedelta(seconds=5)
    done = reconciler(path, later).pass_once()
    assert done.submitted == ["web/production#1"] and recorder.submitted == [first]

    # Its runner starts, then dies: silent past the limit, it is failed and #2 handed over.
    with session_scope(engine) as session:
        run_id = deploys.get_deploy(session, first).flow_run_id
        session.execute(
            update(Deploy)
            .where(Deploy.id == first)
            .values(date_started=datetime.now(UTC), heartbeat_at=datetime.now(UTC))
        )
    assert run_id
    recorder.states[run_id] = RunState.RUNNING
    assert reconciler(path).pass_once().ended == []
    done = reconciler(path, datetime.now(UTC) + timedelta(seconds=20)).pass_once()
    assert done.ended == ["web/production#1"]
    assert recorder.crashed == [run_id]
    with session_scope(engine) as session:
        lost = deploys.get_deploy(session, first)
        assert lost.status == DeployStatus.FAILED and lost.claim is None
        assert deploys.get_deploy(session, second).status == DeployStatus.IN_PROGRESS
    assert recorder.submitted == [first, second]


def test_a_pass_gives_stuck_runs_back_and_crashes_scheduled_flows_whose_holder_died(
    path: HandOver,
) -> None:
    recorder = path.orchestrator
    assert isinstance(recorder, RecordingOrchestrator)
    recorder.stuck = ["taken-then-orphaned"]
    recorder.states["maintenance-run"] = RunState.RUNNING
    with session_scope(path.engine) as session:
        assert leases.take(session, "flow:maintenance", "maintenance-run", ttl=0.01)
    with session_scope(path.engine) as session:  # the holder died: its lease ran out
        session.get_one(Lease, "flow:maintenance").date_expires = datetime.now(UTC) - timedelta(
            seconds=1
        )
    done = reconciler(path).pass_once()
    assert done.given_back == ["taken-then-orphaned"]
    assert recorder.states["taken-then-orphaned"] == RunState.SCHEDULED
    assert done.crashed_flows == ["flow:maintenance"]
    assert recorder.crashed == ["maintenance-run"]
    assert reconciler(path).pass_once().crashed_flows == []  # once
