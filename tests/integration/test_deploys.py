"""Creating, numbering, queueing and cancelling deploys, on SQLite and PostgreSQL, with real git."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from freight.db import Deploy, DeployStatus, session_scope, utcnow
from freight.errors import DeployFinished, InvalidEnvironment, InvalidRef, NotFound
from freight.execution import intake
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.execution.logwriter import LogWriter
from freight.execution.ports import Orchestrator, RunState
from freight.service import apps, deploys, logs, queue, releases
from freight.settings import Settings
from tests.factories import GitRepo, RecordingOrchestrator, make_app


def create(
    engine: Engine, settings: Settings, app: str, ref: str | None = None, **kw: object
) -> Deploy:
    created = intake.create(
        engine,
        DeployRequest(
            app=app,
            environment=str(kw.pop("environment", "staging")),
            ref=ref,
            user=str(kw.pop("user", "ana")),
            **kw,  # type: ignore[arg-type]
        ),
        workspace_root=settings.workspaces,
        git=settings.git_access(),
    )
    with session_scope(engine) as session:
        return deploys.get_deploy(session, created.deploy_id)


def hand_over(engine: Engine, settings: Settings, orchestrator: Orchestrator) -> HandOver:
    return HandOver(
        engine, orchestrator, workspace_root=settings.workspaces, git=settings.git_access()
    )


def finish(engine: Engine, deploy_id: int, status: DeployStatus = DeployStatus.FINISHED) -> None:
    with session_scope(engine) as session:
        deploy = deploys.get_deploy(session, deploy_id)
        assert queue.claim_next(session, deploy.app_id, deploy.environment) is deploy
        deploys.mark_ended(session, deploy, status, None)


@pytest.fixture
def app_name(engine: Engine, origin: GitRepo) -> str:
    with session_scope(engine) as session:
        return make_app(session, origin).name


def test_create_deploy_resolves_branch_tag_and_sha(
    engine: Engine, settings: Settings, origin: GitRepo, app_name: str
) -> None:
    first = origin.git("rev-parse", "HEAD")
    origin.git("tag", "v1.0")
    second = origin.commit("second")
    origin.git("checkout", "-q", "-b", "feature")
    feature = origin.commit("on feature")
    origin.git("checkout", "-q", "main")

    assert create(engine, settings, app_name).sha == second  # the environment's default ref
    assert create(engine, settings, app_name, "feature").sha == feature
    assert create(engine, settings, app_name, "v1.0").sha == first
    assert create(engine, settings, app_name, first).sha == first
    assert create(engine, settings, app_name, first[:10]).sha == first


def test_create_deploy_sees_commits_pushed_after_the_first_fetch(
    engine: Engine, settings: Settings, origin: GitRepo, app_name: str
) -> None:
    create(engine, settings, app_name)
    newer = origin.commit("pushed later")
    assert create(engine, settings, app_name, "main").sha == newer


@pytest.mark.parametrize("ref", ["nope", "main; touch /tmp/x", "$(id)", "-x", "--upload-pack=sh"])
def test_unknown_or_hostile_ref_is_refused(
    engine: Engine, settings: Settings, app_name: str, ref: str
) -> None:
    with pytest.raises(InvalidRef, match="Unknown ref"):
        create(engine, settings, app_name, ref)
    with session_scope(engine) as session:
        assert session.query(Deploy).count() == 0


def test_current_and_previous_follow_finished_deploys(
    engine: Engine, settings: Settings, origin: GitRepo, app_name: str
) -> None:
    with pytest.raises(InvalidRef, match=":current"):
        create(engine, settings, app_name, ":current")
    one = create(engine, settings, app_name)
    finish(engine, one.id)
    two_sha = origin.commit("two")
    two = create(engine, settings, app_name)
    finish(engine, two.id)
    origin.commit("three")
    three = create(engine, settings, app_name)
    finish(engine, three.id, DeployStatus.FAILED)  # a failed deploy is never live

    assert create(engine, settings, app_name, ":current").sha == two_sha
    rollback = create(engine, settings, app_name, ":previous")
    assert rollback.sha == one.sha
    assert rollback.prev_sha == two_sha


def test_unknown_app_and_environment(engine: Engine, settings: Settings, app_name: str) -> None:
    with pytest.raises(NotFound, match="nope"):
        create(engine, settings, "nope")
    with pytest.raises(InvalidEnvironment, match="qa"):
        create(engine, settings, app_name, environment="qa")


def test_config_is_snapshotted_at_creation(
    engine: Engine, settings: Settings, origin: GitRepo, app_name: str
) -> None:
    deploy = create(engine, settings, app_name)
    with session_scope(engine) as session:
        app = apps.get_app(session, app_name)
        spec = apps.spec_of(app).model_dump(mode="json")
        spec["provider"]["command"] = "echo changed"
        apps.save_app(session, apps.AppSpec.model_validate(spec), source=app.source)
    with session_scope(engine) as session:
        assert (
            deploys.get_deploy(session, deploy.id)
            .config["provider"]["command"]
            .startswith("echo deployed")
        )


def test_concurrent_creates_get_numbers_without_gaps_or_duplicates(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    numbers: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def one() -> None:
        try:
            barrier.wait()
            numbers.append(create(engine, settings, app_name).number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(numbers) == list(range(1, 21))
    # Another environment counts on its own.
    assert create(engine, settings, app_name, environment="production").number == 1


def test_queue_hands_over_one_at_a_time_in_creation_order(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    orchestrator = RecordingOrchestrator()
    path = hand_over(engine, settings, orchestrator)
    created = [create(engine, settings, app_name).id for _ in range(3)]
    other_env = create(engine, settings, app_name, environment="production").id
    assert sorted(path.kick_all()) == sorted([created[0], other_env])
    with session_scope(engine) as session:
        app = apps.get_app(session, app_name)
    assert path.kick(app.id, "staging") is None
    assert sorted(orchestrator.submitted) == sorted([created[0], other_env])

    finish_running(engine, created[0])
    assert path.kick(app.id, "staging") == created[1]
    with session_scope(engine) as session:
        nxt = deploys.get_deploy(session, created[1])
        assert nxt.flow_run_id == orchestrator._by_key[f"freight-{nxt.id}-{nxt.claim}"]


def finish_running(engine: Engine, deploy_id: int) -> None:
    with session_scope(engine) as session:
        deploys.mark_ended(
            session, deploys.get_deploy(session, deploy_id), DeployStatus.FINISHED, None
        )


def test_database_refuses_a_second_in_progress_deploy(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    first, second = create(engine, settings, app_name).id, create(engine, settings, app_name).id
    with session_scope(engine) as session:
        session.execute(update(Deploy).where(Deploy.id == first).values(status="in_progress"))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.execute(update(Deploy).where(Deploy.id == second).values(status="in_progress"))


def test_cancel_pending_running_and_finished(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    path = hand_over(engine, settings, RecordingOrchestrator())
    running_id, queued_id = (
        create(engine, settings, app_name).id,
        create(engine, settings, app_name).id,
    )
    path.kick_all()
    with session_scope(engine) as session:  # its runner began it
        deploys.get_deploy(session, running_id).date_started = utcnow()
    path.cancel(queued_id, by="bob")
    path.cancel(running_id, by="bob")
    with session_scope(engine) as session:
        cancelled = deploys.get_deploy(session, queued_id)
        assert cancelled.status == DeployStatus.CANCELLED
        assert cancelled.reason == "Cancelled by bob while queued"
        running = deploys.get_deploy(session, running_id)
        # A running deploy is asked to stop; its runner ends it.
        assert running.status == DeployStatus.IN_PROGRESS
        assert running.cancel_requested_at is not None
        assert queue.pending(session, running.app_id, "staging") == []
    with pytest.raises(DeployFinished, match="already ended"):
        path.cancel(queued_id, by="bob")
    with session_scope(engine) as session:
        page = logs.read_log(session, queued_id)
        assert page.chunks[-1].text == ">> Cancelled by bob while queued\n"


def test_log_paging_and_tail(engine: Engine, settings: Settings, app_name: str) -> None:
    deploy_id = create(engine, settings, app_name).id
    with LogWriter(engine, deploy_id, flush_interval=10) as writer:
        for text in ("alpha", "beta", "gamma"):
            writer.write(text)
            writer.flush()
    with session_scope(engine) as session:
        everything = logs.read_log(session, deploy_id)
        assert [c.text for c in everything.chunks] == ["alpha\n", "beta\n", "gamma\n"]
        assert everything.next_offset == 17
        page = logs.read_log(session, deploy_id, offset=6, limit=5)
        assert [c.text for c in page.chunks] == ["beta\n"] and page.next_offset == 11
        tail = logs.read_log(session, deploy_id, offset=-1, limit=6)
        assert [c.text for c in tail.chunks] == ["gamma\n"]
        tail = logs.read_log(session, deploy_id, offset=-1, limit=7)
        assert [c.text for c in tail.chunks] == ["beta\n", "gamma\n"]
        empty = logs.read_log(session, deploy_id, offset=17)
        assert empty.chunks == [] and empty.next_offset == 17


def test_mirror_is_cloned_once_for_many_deploys(
    engine: Engine, settings: Settings, app_name: str, origin: GitRepo
) -> None:
    create(engine, settings, app_name)
    mirrors = list((settings.workspaces / "mirrors").glob("*.git"))
    assert len(mirrors) == 1
    marker = mirrors[0] / "freight-test-marker"
    marker.write_text("x")
    create(engine, settings, app_name)
    assert marker.exists()
    assert Path(mirrors[0]).is_dir()


def test_release_state_shows_live_running_and_queued_per_environment(
    engine: Engine, settings: Settings, origin: GitRepo, app_name: str
) -> None:
    orchestrator = RecordingOrchestrator()
    live = create(engine, settings, app_name)
    finish(engine, live.id)
    origin.commit("newer")
    failed = create(engine, settings, app_name)
    finish(engine, failed.id, DeployStatus.FAILED)
    running, _queued = create(engine, settings, app_name), create(engine, settings, app_name)
    hand_over(engine, settings, orchestrator).kick_all()
    with session_scope(engine) as session:
        state = {(r.app, r.environment): r for r in releases.release_state(session)}
    staging = state[(app_name, "staging")]
    assert staging.live is not None and staging.live.id == live.id
    assert staging.running is not None and staging.running.id == running.id
    assert staging.queued == 1
    production = state[(app_name, "production")]
    assert production.live is None and production.running is None and production.queued == 0


def test_cancel_of_a_deploy_no_worker_has_started_frees_the_slot_at_once(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    orchestrator = RecordingOrchestrator()  # hands over, but no worker ever starts the run
    path = hand_over(engine, settings, orchestrator)
    stuck, waiting = create(engine, settings, app_name).id, create(engine, settings, app_name).id
    path.kick_all()
    [stuck_run] = orchestrator.states
    path.cancel(stuck, by="bob")
    with session_scope(engine) as session:
        cancelled = deploys.get_deploy(session, stuck)
        assert cancelled.status == DeployStatus.CANCELLED
        assert cancelled.reason == "Cancelled by bob before it started"
        assert cancelled.claim is None  # its run, should it start after all, acts for nothing
        assert deploys.get_deploy(session, waiting).status == DeployStatus.IN_PROGRESS
    assert orchestrator.states[stuck_run] == RunState.CANCELLED
    assert orchestrator.submitted == [stuck, waiting]


def test_a_failed_hand_over_keeps_the_claim_and_a_retry_gets_one_run(
    engine: Engine, settings: Settings, app_name: str
) -> None:
    orchestrator = RecordingOrchestrator()
    orchestrator.down = True
    path = hand_over(engine, settings, orchestrator)
    deploy_id = create(engine, settings, app_name).id
    assert path.kick_all() == [deploy_id]
    with session_scope(engine) as session:
        deploy = deploys.get_deploy(session, deploy_id)
        assert deploy.status == DeployStatus.IN_PROGRESS and deploy.flow_run_id is None
        claim = deploy.claim
    orchestrator.down = False
    path.resubmit(deploy_id)
    path.resubmit(deploy_id)  # a second try of the same claim (two reconcilers, say)
    assert orchestrator.submitted == [deploy_id]
    with session_scope(engine) as session:
        deploy = deploys.get_deploy(session, deploy_id)
        assert deploy.claim == claim
        assert deploy.flow_run_id == orchestrator._by_key[f"freight-{deploy_id}-{claim}"]
