"""Automatic deploys against real git remotes, commits pushed during the test: a new commit
deploys once, two quick commits deploy only the newest, a failed sha is not retried, a lock
holds it, pending checks wait; each environment says what it is doing and why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import httpx
import pytest
from sqlalchemy import Engine

from freight import checks
from freight.catalogue import AppSpec
from freight.checks import CheckContext, CheckResult, Verdict
from freight.db import AppSource, AutoDeployState, DeployStatus, session_scope, utcnow
from freight.execution import autodeploy, intake
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.plugins import PluginConfig
from freight.service import apps, deploys, locks, queue, releases
from freight.service.autodeploy import AutoState, Outcome
from freight.settings import Settings
from tests.factories import GitRepo, RecordingOrchestrator, run_inline, unique_name


class Poller:
    def __init__(self, engine: Engine, settings: Settings, origin: GitRepo) -> None:
        self.engine, self.settings, self.origin = engine, settings, origin
        self.orchestrator = RecordingOrchestrator()
        self.handover = HandOver(
            engine,
            self.orchestrator,
            workspace_root=settings.workspaces,
            git=settings.git_access(),
        )
        self.http = httpx.Client(timeout=5)

    def app(
        self,
        *,
        checks: list[dict[str, object]] | None = None,
        enabled: bool = True,
        paths: list[str] | None = None,
    ) -> str:
        spec = AppSpec.model_validate(
            {
                "name": unique_name("auto"),
                "repository": self.origin.url,
                "provider": {"type": "shell", "command": "true"},
                "checks": checks or [],
                "environments": {
                    "staging": {
                        "default_ref": "main",
                        "auto_deploy": {
                            "branch": "main",
                            "enabled": enabled,
                            "paths": paths or [],
                        },
                    },
                    "production": {"default_ref": "main"},
                },
            }
        )
        with session_scope(self.engine) as session:
            return apps.save_app(session, spec, source=AppSource.API).name

    def context(self) -> autodeploy.PollContext:
        return autodeploy.PollContext(
            client=self.http, urls=self.settings.service_urls(), secrets_from={}
        )

    def poll(self, app: str) -> Outcome:
        outcomes = autodeploy.poll(self.handover, self.context())
        (mine,) = [o for o in outcomes if o.app == app]
        return mine

    def deploys(self, app: str) -> list[tuple[int, str, str | None, str]]:
        """(number, status, sha, user) of the app's staging deploys, oldest first."""
        with session_scope(self.engine) as session:
            rows = deploys.list_deploys(
                session, deploys.DeployFilter(app=app, environment="staging"), limit=100
            )
            return [
                (d.number, str(d.status), d.sha, d.user.name if d.user else "")
                for d in reversed(rows)
            ]

    def by_hand(self, app: str, ref: str, user: str, *, start: bool = False) -> str | None:
        """A person's deploy of `ref` to staging (started at once with `start`); its sha."""
        created = intake.create(
            self.engine,
            DeployRequest(app=app, environment="staging", ref=ref, user=user),
            workspace_root=self.settings.workspaces,
            git=self.settings.git_access(),
        )
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy(session, created.deploy_id)
            if start:
                assert queue.claim_next(session, deploy.app_id, "staging") is deploy
            return deploy.sha

    def first_id(self, app: str) -> int:
        with session_scope(self.engine) as session:
            return deploys.get_deploy_by_number(
                session, app=app, environment="staging", number=1
            ).id

    def end(self, app: str, number: int, status: DeployStatus = DeployStatus.FINISHED) -> None:
        with session_scope(self.engine) as session:
            deploy = deploys.get_deploy_by_number(
                session, app=app, environment="staging", number=number
            )
            if deploy.status == DeployStatus.PENDING:
                assert queue.claim_next(session, deploy.app_id, "staging") is deploy
            deploys.mark_ended(session, deploy, status, None)


@pytest.fixture
def poller(engine: Engine, settings: Settings, origin: GitRepo) -> Iterator[Poller]:
    poller = Poller(engine, settings, origin)
    yield poller
    poller.http.close()


def test_a_new_commit_deploys_once(poller: Poller) -> None:
    app = poller.app()
    head = poller.origin.git("rev-parse", "HEAD")
    first = poller.poll(app)
    assert (first.state, first.reason, first.sha) == (
        AutoState.QUEUED,
        f"queued {app}/staging#1",
        head,
    )
    again = poller.poll(app)
    assert (again.state, again.reason) == (AutoState.DEPLOYING, f"deploying {app}/staging#1")
    assert poller.deploys(app) == [(1, "in_progress", head, "autodeploy")]
    poller.end(app, 1)
    assert poller.poll(app).reason == "up to date"
    newer = poller.origin.commit("a change")
    assert poller.poll(app).reason == f"queued {app}/staging#2"
    assert poller.deploys(app)[-1] == (2, "in_progress", newer, "autodeploy")
    with session_scope(poller.engine) as session:
        row = session.get(AutoDeployState, (apps.get_app(session, app).id, "staging"))
        assert row is not None and (row.state, row.sha, row.branch) == ("queued", newer, "main")


def test_newer_commits_supersede_queued_ones(poller: Poller) -> None:
    app = poller.app()
    poller.poll(app)  # #1 runs (and stays running)
    a = poller.origin.commit("commit a")
    assert poller.poll(app).reason == f"queued {app}/staging#2"
    b = poller.origin.commit("commit b")
    c = poller.origin.commit("commit c")  # two commits between polls
    assert poller.poll(app).reason == f"queued {app}/staging#3"
    assert [(n, s, sha) for n, s, sha, _ in poller.deploys(app)][1:] == [
        (2, "cancelled", a),
        (3, "pending", c),
    ]
    assert b not in {sha for _, _, sha, _ in poller.deploys(app)}
    with session_scope(poller.engine) as session:
        cancelled = deploys.get_deploy_by_number(session, app=app, environment="staging", number=2)
        assert cancelled.reason == (
            f"Cancelled by autodeploy (superseded: main is at {c[:7]}) while queued"
        )
        newest = deploys.get_deploy_by_number(session, app=app, environment="staging", number=3)
        assert (newest.ref, newest.sha) == ("main", c)  # the branch, pinned to what was seen


def test_a_failed_sha_is_not_retried_until_someone_deploys(poller: Poller) -> None:
    app = poller.app()
    head = poller.origin.git("rev-parse", "HEAD")
    poller.poll(app)
    poller.end(app, 1, DeployStatus.FAILED)
    held = poller.poll(app)
    assert (held.state, held.reason) == (
        AutoState.BLOCKED,
        f"sha {head[:7]} failed, deploy manually to resume",
    )
    assert poller.poll(app).state == AutoState.BLOCKED and len(poller.deploys(app)) == 1
    fix = poller.origin.commit("the fix")
    assert poller.poll(app).reason == f"queued {app}/staging#2"
    assert poller.deploys(app)[-1][2] == fix


def test_a_lock_holds_automatic_deploys(poller: Poller) -> None:
    app = poller.app()
    with session_scope(poller.engine) as session:
        lock = locks.create_lock(
            session, app=app, environment="staging", reason="migration", owner="ana"
        )
        lock_id = lock.id
    held = poller.poll(app)
    assert (held.state, held.reason) == (AutoState.BLOCKED, "locked by ana: migration")
    assert poller.deploys(app) == []
    with session_scope(poller.engine) as session:
        locks.release_lock(session, locks.get_lock(session, lock_id), by="ana")
        # Freight's lockedReason is an app-wide lock: it holds every environment, even for
        # the lock's owner, until it runs out.
        ((locked, _),) = locks.set_app_locked_reason(
            session, apps.get_app(session, app), "freeze", by="autodeploy"
        )
        locked.date_expires = utcnow() + timedelta(hours=1)
        lock_id = locked.id
    assert poller.poll(app).reason == "locked by autodeploy: freeze"
    with session_scope(poller.engine) as session:
        locks.get_lock(session, lock_id).date_expires = utcnow() - timedelta(seconds=1)
    assert poller.poll(app).state == AutoState.QUEUED


def test_pending_checks_wait_and_failed_checks_block(
    poller: Poller, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class GateConfig(PluginConfig):
        type: Literal["gate"] = "gate"

    verdict = {"now": Verdict.PENDING}

    class Gate:
        def evaluate(self, config: PluginConfig, context: CheckContext) -> CheckResult:
            return CheckResult(verdict["now"], f"ci/build is {verdict['now']}")

    monkeypatch.setitem(checks.registry._kinds, "gate", (GateConfig, Gate()))
    app = poller.app(checks=[{"type": "gate"}])
    waiting = poller.poll(app)
    assert (waiting.state, waiting.reason) == (AutoState.WAITING, "ci/build is pending")
    assert poller.deploys(app) == []
    verdict["now"] = Verdict.FAILED
    blocked = poller.poll(app)
    assert (
        blocked.state == AutoState.BLOCKED
        and "failed check gate: ci/build is failed" in blocked.reason
    )
    verdict["now"] = Verdict.PASSED
    assert poller.poll(app).state == AutoState.QUEUED


def test_a_missing_branch_is_reported(poller: Poller, tmp_path: Path) -> None:
    app = poller.app()
    poller.origin.git("branch", "-m", "main", "trunk")
    missing = poller.poll(app)
    assert (missing.state, missing.reason) == (AutoState.ERROR, "branch main not found")


def test_release_state_says_what_automatic_deploys_are_doing(poller: Poller) -> None:
    app = poller.app()
    with session_scope(poller.engine) as session:
        before = {r.environment: r.auto_deploy for r in releases.release_state(session, app)}
    assert before["production"] is None
    assert before["staging"] is not None and before["staging"].reason == "not checked yet"
    poller.poll(app)
    with session_scope(poller.engine) as session:
        after = {r.environment: r.auto_deploy for r in releases.release_state(session, app)}
    staging = after["staging"]
    assert staging is not None and (staging.branch, staging.state) == ("main", "queued")
    assert staging.reason == f"queued {app}/staging#1" and staging.checked is not None

    # A lock shows at once, without waiting for the next poll; so does a config turning it off.
    with session_scope(poller.engine) as session:
        locks.create_lock(session, app=app, environment=None, reason="freeze", owner="ana")
        (locked,) = [r.auto_deploy for r in releases.release_state(session, app) if r.auto_deploy]
    assert locked is not None
    assert (locked.state, locked.reason) == (AutoState.BLOCKED, "locked by ana: freeze")
    off = poller.app(enabled=False)
    poller_targets = {o.app for o in autodeploy.poll(poller.handover, poller.context())}
    assert off not in poller_targets  # not polled at all
    with session_scope(poller.engine) as session:
        (disabled,) = [r.auto_deploy for r in releases.release_state(session, off) if r.auto_deploy]
    assert disabled is not None and (disabled.enabled, disabled.state) == (False, "disabled")
    assert disabled.reason == "turned off in the app's config"


def test_a_rollback_a_cancel_and_a_manual_deploy_are_not_undone(poller: Poller) -> None:
    app = poller.app()
    one = poller.origin.git("rev-parse", "HEAD")
    poller.poll(app)
    poller.end(app, 1)
    two = poller.origin.commit("two")
    poller.poll(app)
    poller.end(app, 2)
    # bob rolls back to one: the branch still points at two, which must not come back.
    assert poller.by_hand(app, ":previous", "bob") == one
    poller.end(app, 3)
    held = poller.poll(app)
    assert (held.state, held.reason) == (
        AutoState.BLOCKED,
        f"sha {two[:7]} was replaced by {app}/staging#3 by bob, deploy manually to resume",
    )
    # A new commit resumes; ana cancels its deploy while it waits, and it stays cancelled.
    three = poller.origin.commit("three")
    poller.by_hand(app, one, "carl", start=True)
    assert poller.poll(app).reason == f"queued {app}/staging#5"
    with session_scope(poller.engine) as session:
        queued = deploys.get_deploy_by_number(session, app=app, environment="staging", number=5)
        deploys.cancel_deploy(session, queued, by="ana")
    assert poller.poll(app).reason == (
        f"sha {three[:7]} was cancelled by ana, deploy manually to resume"
    )
    # A newer commit is queued behind carl's deploy; dan deploys it by hand first, and the
    # automatic deploy of the older one, still queued, is dropped rather than run over it.
    four = poller.origin.commit("four")
    assert poller.poll(app).reason == f"queued {app}/staging#6"
    poller.end(app, 4)
    five = poller.origin.commit("five")
    poller.by_hand(app, five, "dan")
    with session_scope(poller.engine) as session:  # dan's goes first
        manual = deploys.get_deploy_by_number(session, app=app, environment="staging", number=7)
        queue.move_to_front(session, manual)
    poller.end(app, 7)
    assert poller.poll(app).reason == "up to date"
    assert poller.deploys(app)[5] == (6, "cancelled", four, "autodeploy")


def test_a_lock_taken_while_an_automatic_deploy_waits_holds_it_until_unlocked(
    poller: Poller, settings: Settings
) -> None:
    app = poller.app()
    head = poller.origin.git("rev-parse", "HEAD")
    assert poller.poll(app).state == AutoState.QUEUED
    with session_scope(poller.engine) as session:
        lock_id = locks.create_lock(
            session, app=app, environment="staging", reason="migration", owner="ana"
        ).id
    with session_scope(poller.engine) as session:
        first = deploys.get_deploy(session, poller.first_id(app))
    assert first.flow_run_id
    status = run_inline(
        settings, poller.handover, first.id, run_id=first.flow_run_id, claim=first.claim
    )
    assert status == DeployStatus.CANCELLED
    assert poller.poll(app).reason == "locked by ana: migration"
    with session_scope(poller.engine) as session:
        locks.release_lock(session, locks.get_lock(session, lock_id), by="ana")
    # Refused by the lock, the sha did not fail: once unlocked it is deployed.
    assert poller.poll(app).reason == f"queued {app}/staging#2"
    assert poller.deploys(app) == [
        (1, "cancelled", head, "autodeploy"),
        (2, "in_progress", head, "autodeploy"),
    ]


def test_a_push_outside_the_filtered_paths_is_not_deployed_and_one_inside_is(
    poller: Poller,
) -> None:
    """Several apps in one repository: web deploys what changes under services/web or lib."""
    app = poller.app(paths=["services/web/**", "lib/**"])
    first = poller.origin.commit("web", {"services/web/app.py": "v1"})
    assert poller.poll(app).state == AutoState.QUEUED  # nothing live yet: deployed
    poller.end(app, 1)
    api = poller.origin.commit("api only", {"services/api/app.py": "v2"})
    docs = poller.origin.commit("docs", {"README.md": "how to"})
    skipped = poller.poll(app)
    assert (skipped.state, skipped.sha) == (AutoState.UP_TO_DATE, docs)
    assert skipped.reason == f"no change under services/web/**, lib/** since {first[:7]}"
    assert api != docs and len(poller.deploys(app)) == 1
    # The state the API and the dashboard show says so too.
    with session_scope(poller.engine) as session:
        (state,) = [r for r in releases.release_state(session, app) if r.environment == "staging"]
        assert state.auto_deploy is not None
        assert state.auto_deploy.reason == skipped.reason
    shared = poller.origin.commit("a shared helper", {"lib/util.py": "x"})
    assert poller.poll(app).state == AutoState.QUEUED
    assert poller.deploys(app)[-1][2:] == (shared, "autodeploy")
