"""Deploy windows and freezes on SQLite and PostgreSQL, on a fake clock: a person's deploy
refused outside a window and forced past it with a reason, one inside it accepted, a run
started from Prefect refused at its lock check, an automatic deploy waiting for the window and
queued when it opens, a freeze that starts later and ends, announced both times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from freight.catalogue import AppSpec
from freight.db import AppSource, DeployStatus, session_scope
from freight.errors import Frozen, MissingArgument, NotPromoted, OutsideWindow
from freight.execution import autodeploy, delivery, housekeeping
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest, Screen
from freight.service import apps, barriers, deploys, locks, logs, releases
from freight.service.autodeploy import AutoState
from freight.settings import Settings
from tests.conftest import Clock
from tests.doubles import HttpDouble, RecordingServer, Reply, recording_server
from tests.factories import (
    GitRepo,
    RecordingOrchestrator,
    make_app,
    register,
    run_inline,
    unique_name,
)

# Monday to Thursday, 09:00 to 17:00 in Berlin, never from Friday 16:00 to Monday 08:00.
WINDOWS = [
    {"allow": "0 9 * * 1-4", "duration": "8h", "timezone": "Europe/Berlin"},
    {"deny": "0 16 * * 5", "duration": "64h", "timezone": "Europe/Berlin"},
]
SUNDAY = datetime(2026, 12, 6, 12, tzinfo=UTC)
MONDAY_MORNING = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # 10:30 in Berlin
CLOSED = "the next opens Mon 09:00 Europe/Berlin"


class Rig:
    def __init__(
        self, engine: Engine, settings: Settings, origin: GitRepo, hook: RecordingServer
    ) -> None:
        self.engine, self.settings, self.origin, self.hook = engine, settings, origin, hook
        self.handover = HandOver(
            engine,
            RecordingOrchestrator(),
            workspace_root=settings.workspaces,
            git=settings.git_access(),
        )

    def app(self, **extra: object) -> str:
        with session_scope(self.engine) as session:
            notifiers = [{"type": "webhook", "url": self.hook.url + "/hook"}]
            return make_app(
                session, self.origin, command="echo deployed", notifiers=notifiers, **extra
            ).name

    def ask(
        self,
        app: str,
        environment: str = "staging",
        *,
        user: str = "ana",
        ref: str | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> int:
        """A person's deploy, screened as the API, the CLI and the dashboard screen it."""
        request = DeployRequest(
            app=app, environment=environment, user=user, ref=ref, force=force, reason=reason
        )
        return self.handover.request(request, screen=Screen()).deploy_id

    def run(
        self,
        app: str,
        environment: str = "staging",
        *,
        force: bool = False,
        reason: str | None = None,
    ) -> int:
        """A deploy started from Prefect (registered by its own run), run to its end."""
        deploy_id, run_id = register(self.handover, app, environment, force=force, reason=reason)
        run_inline(self.settings, self.handover, deploy_id, run_id=run_id, claim=None)
        return deploy_id

    def execute(self, deploy_id: int) -> int:
        """Run a deploy as the engine runs the run it was handed to."""
        with session_scope(self.engine) as session:
            row = deploys.get_deploy(session, deploy_id)
            assert row.flow_run_id and row.claim, f"{row.name} was not handed over"
            run_id, claim = row.flow_run_id, row.claim
        run_inline(self.settings, self.handover, deploy_id, run_id=run_id, claim=claim)
        return deploy_id

    def deploy(self, deploy_id: int) -> tuple[DeployStatus, str | None, str | None, str]:
        """Its status, reason, who cancelled it, and its log."""
        with session_scope(self.engine) as session:
            row = deploys.get_deploy(session, deploy_id)
            text = "".join(c.text for c in logs.read_log(session, deploy_id).chunks)
            return DeployStatus(row.status), row.reason, row.cancelled_by, text

    def events(self, event: str) -> list[dict[str, object]]:
        return [r.json() for r in self.hook.requests if r.json().get("event") == event]

    def maintain(self) -> housekeeping.MaintenanceReport:
        with httpx.Client(timeout=5) as client:
            return housekeeping.run_maintenance(
                self.engine, delivery.courier(self.settings, client), print
            )


@pytest.fixture
def rig(engine: Engine, settings: Settings, origin: GitRepo) -> Iterator[Rig]:
    with recording_server() as hook:
        yield Rig(engine, settings, origin, hook)


def test_a_person_s_deploy_is_refused_outside_its_window_and_forced_with_a_reason(
    rig: Rig, clock: Clock
) -> None:
    app = rig.app(windows=WINDOWS)
    clock.set(SUNDAY)
    with pytest.raises(OutsideWindow) as refused:
        rig.ask(app)
    assert str(refused.value) == f"{app}/staging is outside its deploy windows; {CLOSED}"
    with pytest.raises(MissingArgument, match="forcing past it needs a reason"):
        rig.ask(app, force=True)
    forced = rig.ask(app, force=True, reason="security fix")
    log = rig.deploy(forced)[3]  # accepted: it is on its way
    assert (
        f">> Forced by ana past: {app}/staging is outside its deploy windows; {CLOSED}. "
        "Reason: security fix"
    ) in log
    with session_scope(rig.engine) as session:  # for its notifications
        row = deploys.get_deploy(session, forced)
        assert row.forced_past == f"{app}/staging is outside its deploy windows; {CLOSED}"
        assert row.force_reason == "security fix"
    # Inside the window nothing stands in the way; production has no windows of its own to
    # lift the app's, so it is closed too.
    clock.set(MONDAY_MORNING)
    rig.ask(app)
    clock.set(SUNDAY)
    with pytest.raises(OutsideWindow):
        rig.ask(app, "production")


def test_an_environment_s_own_windows_replace_the_app_s() -> None:
    spec = AppSpec.model_validate(
        {
            "name": "web",
            "repository": "https://example.com/web.git",
            "provider": {"type": "shell", "command": "true"},
            "windows": WINDOWS,
            "environments": {"staging": {"windows": []}, "production": {}},
        }
    )
    assert spec.environment("staging").windows == []
    assert len(spec.environment("production").windows) == 2


def test_a_run_started_from_prefect_outside_its_window_is_refused_at_its_lock_check(
    rig: Rig, clock: Clock
) -> None:
    app = rig.app(windows=WINDOWS)
    clock.set(SUNDAY)
    status, reason, by, log = rig.deploy(rig.run(app))
    assert status == DeployStatus.CANCELLED and by == "a deploy window"
    assert reason == f"Not run: {app}/staging is outside its deploy windows; {CLOSED}"
    assert "deployed" not in log
    status, _, _, log = rig.deploy(rig.run(app, force=True, reason="hotfix"))
    assert status == DeployStatus.FINISHED
    assert f">> Forced past: {app}/staging is outside its deploy windows; {CLOSED}." in log
    finished = rig.events("finished")[-1]
    assert finished["forced_past"] and finished["force_reason"] == "hotfix"
    clock.set(MONDAY_MORNING)
    status, _, _, log = rig.deploy(rig.run(app))
    assert status == DeployStatus.FINISHED and "Forced" not in log


def test_an_automatic_deploy_waits_for_its_window_and_is_queued_when_it_opens(
    rig: Rig, clock: Clock
) -> None:
    spec = AppSpec.model_validate(
        {
            "name": unique_name("auto"),
            "repository": rig.origin.url,
            "provider": {"type": "shell", "command": "true"},
            "windows": WINDOWS,
            "environments": {"staging": {"auto_deploy": {"branch": "main"}}},
        }
    )
    with session_scope(rig.engine) as session:
        app = apps.save_app(session, spec, source=AppSource.API).name
    sha = rig.origin.commit("new work")
    with httpx.Client(timeout=5) as client:
        context = autodeploy.PollContext(
            client=client, urls=rig.settings.service_urls(), secrets_from={}
        )
        clock.set(SUNDAY)
        (waiting,) = [o for o in autodeploy.poll(rig.handover, context) if o.app == app]
        assert waiting.state == AutoState.WAITING
        assert waiting.reason == "waiting for window, opens Mon 09:00 Europe/Berlin"
        with session_scope(rig.engine) as session:
            assert deploys.list_deploys(session, deploys.DeployFilter(app=app)) == []
        clock.set(MONDAY_MORNING)
        (queued,) = [o for o in autodeploy.poll(rig.handover, context) if o.app == app]
    assert queued.state == AutoState.QUEUED
    with session_scope(rig.engine) as session:
        (made,) = deploys.list_deploys(session, deploys.DeployFilter(app=app))
        assert (made.sha, made.user and made.user.name) == (sha, "autodeploy")


def test_a_freeze_starts_later_holds_everyone_and_ends_announced_both_times(
    rig: Rig, clock: Clock
) -> None:
    app = rig.app()
    clock.set(SUNDAY)
    start, end = SUNDAY + timedelta(hours=1), SUNDAY + timedelta(hours=3)
    with session_scope(rig.engine) as session:
        freeze = locks.create_lock(
            session,
            app=app,
            environment="staging",
            reason="year-end",
            owner="ana",
            starts=start,
            expires=end,
            freeze=True,
        )
        freeze_id = freeze.id
    assert rig.deploy(rig.run(app))[0] == DeployStatus.FINISHED  # not yet
    assert rig.maintain().begun_freezes == []
    clock.set(start + timedelta(minutes=1))
    report = rig.maintain()
    assert report.begun_freezes == [f"{app}/staging"]
    assert rig.maintain().begun_freezes == []  # announced once
    (begun,) = rig.events("frozen")
    assert begun["title"] == (f"{app}/staging frozen until 2026-12-06T15:00:00Z by ana: year-end")
    # Its owner is held too (a lock would let her through), and production is not frozen.
    with pytest.raises(Frozen, match=f"{app}/staging is frozen until 2026-12-06 15:00 UTC"):
        rig.ask(app, user="ana")
    rig.ask(app, "production", user="bob")
    status, reason, by, _ = rig.deploy(rig.run(app))  # from Prefect: refused at its lock check
    assert (status, by) == (DeployStatus.CANCELLED, "a freeze")
    assert reason and "is frozen until" in reason
    clock.set(end)
    assert rig.maintain().expired_locks == [f"{app}/staging"]
    (ended,) = rig.events("expired")
    assert ended["title"] == f"{app}/staging thawed: the freeze by ana ended (year-end)"
    rig.ask(app, user="ana")
    with session_scope(rig.engine) as session:
        assert locks.get_lock(session, freeze_id).released_by == locks.EXPIRED


def promoting_app(rig: Rig, **production: object) -> str:
    with session_scope(rig.engine) as session:
        return make_app(
            session,
            rig.origin,
            command="true",
            environments={
                "staging": {},
                "production": {"requires": {"staging": "30m"}, **production},
            },
        ).name


def finished_at(rig: Rig, deploy_id: int) -> datetime:
    with session_scope(rig.engine) as session:
        row = deploys.get_deploy(session, deploy_id)
        assert row.status == DeployStatus.FINISHED and row.date_finished, rig.deploy(deploy_id)
        return row.date_finished


def test_production_takes_only_what_baked_on_staging_unless_forced_with_a_reason(
    rig: Rig, clock: Clock
) -> None:
    app = promoting_app(rig)
    sha = rig.origin.git("rev-parse", "HEAD")
    staged = finished_at(rig, rig.run(app))
    rule = f"{app}/production takes only what was live on staging for 30m"
    met = f"{staged + timedelta(minutes=30):%Y-%m-%d %H:%M}"
    baking = f"{rule}: {sha[:7]} has been for 10m, met at {met} UTC"
    clock.set(staged + timedelta(minutes=10))
    # Started from Prefect: refused at its lock check, cancelled by the rule.
    status, reason, by, _ = rig.deploy(rig.run(app, "production"))
    assert (status, by, reason) == (
        DeployStatus.CANCELLED,
        "a promotion rule",
        f"Not run: {baking}",
    )
    with pytest.raises(NotPromoted) as refused:
        rig.ask(app, "production")
    assert str(refused.value) == baking
    with pytest.raises(MissingArgument, match="forcing past it needs a reason"):
        rig.ask(app, "production", force=True)
    fresh = rig.origin.commit("not on staging")
    with pytest.raises(NotPromoted, match=f"{rule}: {fresh[:7]} was never live there"):
        rig.ask(app, "production")
    forced = rig.ask(app, "production", force=True, reason="hotfix")
    with session_scope(rig.engine) as session:
        assert deploys.get_deploy(session, forced).forced_past == (
            f"{rule}: {fresh[:7]} was never live there"
        )
    clock.set(staged + timedelta(minutes=31))
    rig.ask(app, "production", ref=sha)  # baked: it goes


def test_promote_auto_deploys_what_baked_on_staging_by_itself(rig: Rig, clock: Clock) -> None:
    app = promoting_app(rig, promote="auto")
    sha = rig.origin.git("rev-parse", "HEAD")
    with httpx.Client(timeout=5) as client:
        context = autodeploy.PollContext(
            client=client, urls=rig.settings.service_urls(), secrets_from={}
        )

        def look() -> tuple[AutoState, str]:
            (mine,) = [o for o in autodeploy.poll(rig.handover, context) if o.app == app]
            assert (mine.environment, mine.branch) == ("production", "promotion from staging")
            return mine.state, mine.reason

        assert look() == (AutoState.UP_TO_DATE, "nothing is live on staging yet")
        staged = finished_at(rig, rig.run(app))
        clock.set(staged + timedelta(minutes=10))
        met = f"{staged + timedelta(minutes=30):%Y-%m-%d %H:%M}"
        assert look() == (
            AutoState.WAITING,
            f"not promoted yet: {sha[:7]} has been for 10m, met at {met} UTC",
        )
        clock.set(staged + timedelta(minutes=30))
        state, reason = look()
    assert (state, reason) == (AutoState.QUEUED, f"queued {app}/production#1")
    with session_scope(rig.engine) as session:
        (made,) = deploys.list_deploys(
            session, deploys.DeployFilter(app=app, environment="production")
        )
        assert (made.sha, made.ref, made.user and made.user.name) == (sha, sha, "autodeploy")
        # What the API and the dashboard show for production.
        (now,) = [r for r in releases.release_state(session, app) if r.environment == "production"]
        assert now.auto_deploy is not None
        assert now.auto_deploy.branch == "promotion from staging"


class Health(HttpDouble):
    """The deployed service's health endpoint: it answers `status`, which the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.route("GET", "/health", lambda request: Reply(self.status, {"ok": self.status}))


def test_a_deploy_is_verified_over_http_as_many_times_as_asked(rig: Rig) -> None:
    with Health().running() as health:
        app = rig.app(verify={"http": f"{health.url}/health", "times": 3, "interval": "1s"})
        status, _, _, log = rig.deploy(rig.run(app))
    assert status == DeployStatus.FINISHED, log
    for attempt in (1, 2, 3):
        assert f">> Verify: GET {health.url}/health ({attempt} of 3) answered 200\n" in log
    assert len(health.received("GET", "/health")) == 3
    assert log.index(">> Verified") < log.index(">> Workspace removed")


def test_a_failed_verification_rolls_back_at_the_front_and_locks(rig: Rig) -> None:
    with Health().running() as health:
        app = rig.app(
            verify={"http": f"{health.url}/health", "on_failure": "rollback", "timeout": "2s"}
        )
        good = rig.origin.git("rev-parse", "HEAD")
        assert rig.deploy(rig.run(app))[0] == DeployStatus.FINISHED
        bad = rig.origin.commit("breaks /health")
        health.status = 503
        broken = rig.run(app)
        status, reason, _, log = rig.deploy(broken)
        assert status == DeployStatus.FAILED
        failure = f"Verify failed: GET {health.url}/health (1 of 1) answered 503, not 200"
        assert reason == failure
        assert f">> Rolling back: {app}/staging#3 is next, and {app}/staging is locked" in log
        with session_scope(rig.engine) as session:
            back = deploys.get_deploy_by_number(session, app=app, environment="staging", number=3)
            assert (back.sha, back.user and back.user.name) == (good, "freight")
            assert back.force and back.priority > 0
            (lock,) = locks.list_locks(session, app=app, environment="staging")
            assert lock.reason == f"rolled back automatically from {bad[:7]}: {failure}"
            assert lock.owner == "freight"
            # Automatic deploys hold until someone unlocks.
            held = autodeploy_barriers(session, app)
            assert held == [f"locked by freight: {lock.reason}"]
        (locked,) = rig.events("locked")
        assert locked["title"].startswith(f"{app}/staging locked by freight: rolled back")
        # The rollback runs (the service is healthy on the old version) and restores it.
        health.status = 200
        assert rig.deploy(rig.execute(back.id))[0] == DeployStatus.FINISHED
    with session_scope(rig.engine) as session:
        assert releases.current_sha(session, back.app_id, "staging") == good


def test_a_failed_command_verification_fails_the_deploy_without_rollback(rig: Rig) -> None:
    app = rig.app(verify={"command": "echo smoke {environment}; exit 3"})
    assert rig.deploy(rig.run(app))[0] == DeployStatus.FAILED
    status, reason, _, log = rig.deploy(rig.run(app))
    assert status == DeployStatus.FAILED
    assert reason == "Verify failed: Command exited with status 3"
    assert ">> Verify:\n" in log and "smoke staging\n" in log
    assert "Rolling back" not in log
    with session_scope(rig.engine) as session:
        assert locks.list_locks(session, app=app) == []


def autodeploy_barriers(session: Session, app: str) -> list[str]:
    row = apps.get_app(session, app)
    return [b.holding for b in barriers.barriers(session, row, "staging", None)]
