"""What the database keeps of machines, on SQLite and PostgreSQL: check-ins (current state and a
history row per change), drift judged once per change and only at rest, statuses judged by
silence an API heard, the orders and cancels each agent is given, the output and results of its
runs (a batch sent twice kept once), and the retention of history."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from freight.db import (
    App,
    Deploy,
    DeployStatus,
    Machine,
    MachineEvent,
    MachineOutput,
    MachineRun,
    MachineVersion,
    session_scope,
    utcnow,
)
from freight.errors import InvalidRequest, NotFound
from freight.service import machines, pulls, releases
from freight.service.machines import AppReport, CheckIn, Filters, MachineStatus
from tests.factories import GitRepo, make_app

OLD, NEW = "1" * 40, "2" * 40


@pytest.fixture
def app(engine: Engine, origin: GitRepo) -> str:
    with session_scope(engine) as session:
        return make_app(session, origin, name="web").name


def check_in(
    engine: Engine,
    name: str,
    version: str | None,
    *,
    when: datetime | None = None,
    app: str = "web",
    env: str = "production",
    can_deploy: bool = True,
    allowed: frozenset[str] | None = None,
    error: str | None = None,
) -> machines.Recorded:
    with session_scope(engine) as session:
        return machines.check_in(
            session,
            CheckIn(
                name=name,
                labels={"role": "web"},
                agent_version="0.1.0",
                interval=15,
                apps=[AppReport(app, env, version, error, can_deploy)],
            ),
            allowed=allowed,
            now=when or utcnow(),
        )


def deploy(
    engine: Engine,
    sha: str,
    *,
    status: DeployStatus,
    pull: bool = True,
    finished: datetime | None = None,
    number: int | None = None,
) -> int:
    """A deploy of web/production, as its run would leave it (and its order, if it pulls)."""
    with session_scope(engine) as session:
        app = session.scalar(select(App).where(App.name == "web"))
        assert app is not None
        count = session.scalar(select(func.count(Deploy.id)).where(Deploy.app_id == app.id))
        row = Deploy(
            app_id=app.id,
            environment="production",
            number=number or (count or 0) + 1,
            ref="main",
            sha=sha,
            status=status,
            config={},
            date_started=utcnow(),
            date_finished=finished or (utcnow() if status.is_final else None),
        )
        session.add(row)
        session.flush()
        if pull:
            pulls.publish(session, row, min_ready=None, now=utcnow())
        if status == DeployStatus.FINISHED:
            releases.record_finished(session, row)
        return row.id


def events(engine: Engine) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        return [
            (e.event, e.machine.name, e.detail)
            for e in session.scalars(select(MachineEvent).order_by(MachineEvent.id))
        ]


def history(engine: Engine, name: str) -> list[str | None]:
    with session_scope(engine) as session:
        return [seen.version for seen in machines.history(session, name, allowed=None)]


def view(engine: Engine, name: str) -> machines.MachineView:
    with session_scope(engine) as session:
        return machines.get_machine(session, name, allowed=None, now=utcnow(), distance=None)


def test_check_ins_keep_the_current_state_and_a_history_row_per_change(
    engine: Engine, app: str
) -> None:
    start = utcnow()
    for minutes, version in enumerate((OLD, OLD, OLD, NEW, NEW)):
        check_in(engine, "web-1", version, when=start + timedelta(minutes=minutes))
    assert history(engine, "web-1") == [NEW, OLD]  # newest first, one row per change
    seen = view(engine, "web-1")
    assert seen.last_seen == start + timedelta(minutes=4)
    assert seen.status == MachineStatus.ONLINE
    (state,) = seen.apps
    assert (state.version, state.can_deploy, state.date_changed) == (
        NEW,
        True,
        start + timedelta(minutes=3),
    )
    # An agent that cannot read its version says why; that is a change too.
    check_in(engine, "web-1", None, error="cannot read /srv/web/REVISION: No such file")
    assert view(engine, "web-1").apps[0].error == "cannot read /srv/web/REVISION: No such file"
    assert history(engine, "web-1") == [None, NEW, OLD]


def test_apps_a_key_may_not_report_are_refused_by_field_and_the_rest_is_kept(
    engine: Engine, app: str, origin: GitRepo
) -> None:
    with session_scope(engine) as session:
        make_app(session, origin, name="vault")
    assert check_in(engine, "web-1", OLD, app="ghost").refused == [
        {"field": "apps[0].app", "error": machines.UNKNOWN_APP}
    ]
    # Another app's: refused exactly as an unknown one.
    assert check_in(engine, "web-1", OLD, app="vault", allowed=frozenset({"web"})).refused == [
        {"field": "apps[0].app", "error": machines.UNKNOWN_APP}
    ]
    assert check_in(engine, "web-1", OLD, env="nowhere").refused == [
        {"field": "apps[0].env", "error": "App 'web' has no environment 'nowhere'"}
    ]
    with session_scope(engine) as session:
        assert (
            machines.list_machines(session, Filters(), allowed=None, now=utcnow(), distance=None)
            == []
        )  # a machine that reported nothing Freight knows shows nowhere
    check_in(engine, "web-1", OLD)
    assert [s.app for s in view(engine, "web-1").apps] == ["web"]


def test_drift_is_told_once_when_found_and_once_when_resolved_and_only_at_rest(
    engine: Engine, app: str
) -> None:
    live = utcnow() - timedelta(minutes=10)
    deploy(engine, NEW, status=DeployStatus.FINISHED, finished=live)
    for _ in range(3):
        check_in(engine, "web-1", OLD)
    assert [e[:2] for e in events(engine)] == [("drift_found", "web-1")]
    assert OLD in events(engine)[0][2] and NEW in events(engine)[0][2]
    state = view(engine, "web-1").apps[0]
    assert (state.drift, state.live_sha) == (True, NEW)
    check_in(engine, "web-1", NEW[:7])  # an abbreviated sha is that sha
    check_in(engine, "web-1", NEW)
    assert [e[0] for e in events(engine)] == ["drift_found", "drift_resolved"]
    # While a deploy runs, and for one interval after one finished, a machine may lag.
    running = deploy(engine, OLD, status=DeployStatus.IN_PROGRESS)
    check_in(engine, "web-1", OLD)
    with session_scope(engine) as session:
        row = session.get_one(Deploy, running)
        row.status, row.date_finished = DeployStatus.FINISHED, utcnow()
        releases.record_finished(session, row)
    check_in(engine, "web-1", NEW)
    assert [e[0] for e in events(engine)] == ["drift_found", "drift_resolved"]


def test_silence_makes_a_machine_stale_then_lost_once_but_only_silence_an_api_heard(
    engine: Engine, app: str
) -> None:
    start = utcnow()
    check_in(engine, "web-1", OLD, when=start)  # every 15 s
    check_in(engine, "web-2", OLD, when=start)

    def judge(after: float, heard_since: datetime = start) -> dict[str, str]:
        with session_scope(engine) as session:
            machines.judge_statuses(
                session, start + timedelta(seconds=after), heard_since=heard_since
            )
            return {m.name: m.status for m in session.scalars(select(Machine))}

    assert judge(40) == {"web-1": "online", "web-2": "online"}
    assert judge(50) == {"web-1": "stale", "web-2": "stale"}  # 3 check-ins missed
    # No API served from 0 to 100 s: only what came after counts.
    assert judge(200, heard_since=start + timedelta(seconds=100)) == {
        "web-1": "stale",
        "web-2": "stale",
    }
    check_in(engine, "web-2", OLD, when=start + timedelta(seconds=150))
    assert judge(160) == {"web-1": "lost", "web-2": "online"}  # 10 missed
    assert judge(170) == {"web-1": "lost", "web-2": "online"}
    assert [e[:2] for e in events(engine)] == [("machine_lost", "web-1")]
    # Back, and lost again: news again.
    check_in(engine, "web-1", OLD, when=start + timedelta(seconds=200))
    assert judge(201)["web-1"] == "online"
    judge(400)
    assert [e[:2] for e in events(engine)].count(("machine_lost", "web-1")) == 2


def test_an_agent_is_ordered_to_deploy_once_and_to_stop_what_it_must_give_up(
    engine: Engine, app: str
) -> None:
    places = check_in(engine, "web-1", OLD).places
    machine_id = view_id(engine, "web-1")
    check_in(engine, "web-2", OLD, can_deploy=False)  # reports only: never ordered

    def told(running: tuple[int, ...] = ()) -> pulls.Instructions:
        with session_scope(engine) as session:
            return pulls.instructions(session, machine_id, places, running)

    assert not told()  # a push environment: nothing desired
    first = deploy(engine, NEW, status=DeployStatus.IN_PROGRESS)
    (order,) = told().orders
    assert (order.deploy_id, order.sha, order.catch_up) == (first, NEW, False)
    with session_scope(engine) as session:
        assert pulls.publish(
            session, session.get_one(Deploy, first), min_ready=None, now=utcnow()
        ).machines == ["web-1"]
        pulls.record_run(
            session, first, "web-1", first=0, lines=[], status=None, message=None, allowed=None
        )
    assert not told((first,))  # tried: not ordered again, and it may go on
    with session_scope(engine) as session:
        pulls.cancel(session, first)
    assert told((first,)).cancel == [first]
    with session_scope(engine) as session:
        row = session.get_one(Deploy, first)
        row.status = DeployStatus.FAILED
    assert told((first,)).cancel == [first]


def view_id(engine: Engine, name: str) -> int:
    with session_scope(engine) as session:
        return machines.machine_id(session, name)


def test_a_machine_behind_the_live_pull_release_catches_up_once(engine: Engine, app: str) -> None:
    live = deploy(engine, NEW, status=DeployStatus.FINISHED)
    places = check_in(engine, "web-1", OLD).places
    machine_id = view_id(engine, "web-1")
    with session_scope(engine) as session:
        (order,) = pulls.instructions(session, machine_id, places, ()).orders
        assert (order.deploy_id, order.catch_up) == (live, True)
        pulls.record_run(
            session, live, "web-1", first=0, lines=["x"], status="failed", message="exit 1",
            allowed=None,
        )  # fmt: skip
        # A catch-up that failed is not tried again on every check-in.
        assert not pulls.instructions(session, machine_id, places, ())
        assert not pulls.instructions(session, machine_id, places, (live,)).cancel


def test_run_output_is_kept_once_in_order_and_its_end_once(engine: Engine, app: str) -> None:
    check_in(engine, "web-1", OLD)
    deploy_id = deploy(engine, NEW, status=DeployStatus.IN_PROGRESS)

    def send(first: int, lines: list[str], status: str | None = None) -> MachineRun:
        with session_scope(engine) as session:
            run = pulls.record_run(
                session, deploy_id, "web-1", first=first, lines=lines, status=status,
                message=None, allowed=None,
            )  # fmt: skip
            session.expunge(run)
            return run

    send(0, ["a", "b"])
    send(0, ["a", "b"])  # the agent did not hear the answer and sends again
    send(1, ["b", "c\x00d"], status="succeeded")
    assert send(3, [], status="failed").status == "succeeded"  # ended once
    with pytest.raises(InvalidRequest, match=r"from: 9 skips lines \(the server has 3\)"):
        send(9, ["z"])
    with session_scope(engine) as session:
        progress = pulls.progress(session, deploy_id, after=0, now=utcnow())
        assert [(m, text) for _, m, text in progress.lines] == [
            ("web-1", "a"),
            ("web-1", "b"),
            ("web-1", "c\\x00d"),
        ]
        assert progress.runs == {"web-1": ("succeeded", None)}
        assert session.scalar(select(func.count(MachineOutput.id))) == 3


def test_runs_are_refused_for_deploys_that_do_not_pull_or_that_a_key_may_not_see(
    engine: Engine, app: str
) -> None:
    check_in(engine, "web-1", OLD)
    pushed = deploy(engine, NEW, status=DeployStatus.IN_PROGRESS, pull=False)
    with session_scope(engine) as session:
        with pytest.raises(InvalidRequest, match="is not a pull deploy"):
            pulls.record_run(
                session, pushed, "web-1", first=0, lines=[], status=None, message=None,
                allowed=None,
            )  # fmt: skip
        with pytest.raises(NotFound, match=f"Deploy {pushed} not found"):
            pulls.record_run(
                session, pushed, "web-1", first=0, lines=[], status=None, message=None,
                allowed=frozenset({"other"}),
            )  # fmt: skip


def test_retention_drops_old_history_but_each_machine_s_current_version(
    engine: Engine, app: str
) -> None:
    long_ago = utcnow() - timedelta(days=200)
    for day, version in enumerate((OLD, NEW, OLD)):
        check_in(engine, "web-1", version, when=long_ago + timedelta(days=day))
    check_in(engine, "web-2", OLD, when=long_ago)
    with session_scope(engine) as session:
        dropped = machines.forget_history(session, older_than=utcnow() - timedelta(days=90))
    assert dropped == 2
    assert history(engine, "web-1") == [OLD]
    assert history(engine, "web-2") == [OLD]
    with session_scope(engine) as session:
        assert session.scalar(select(func.count(MachineVersion.id))) == 2


def test_retention_drops_machine_output_an_hour_after_its_deploy_finished(
    engine: Engine, app: str
) -> None:
    check_in(engine, "web-1", OLD)
    done = deploy(
        engine, NEW, status=DeployStatus.FINISHED, finished=utcnow() - timedelta(minutes=61)
    )
    just_done = deploy(engine, NEW, status=DeployStatus.FAILED)
    running = deploy(engine, NEW, status=DeployStatus.IN_PROGRESS)
    with session_scope(engine) as session:
        for deploy_id in (done, just_done, running):
            pulls.record_run(
                session, deploy_id, "web-1", first=0, lines=["a", "b"], status=None,
                message=None, allowed=None,
            )  # fmt: skip
    with session_scope(engine) as session:
        assert machines.forget_history(session, older_than=utcnow() - timedelta(days=90)) == 2
    with session_scope(engine) as session:
        kept = session.scalars(select(MachineOutput.deploy_id).order_by(MachineOutput.id))
        assert list(kept) == [just_done, just_done, running, running]


def test_a_run_the_agent_no_longer_names_is_failed_once_and_not_ordered_again(
    engine: Engine, app: str
) -> None:
    places = check_in(engine, "web-1", OLD).places
    machine_id = view_id(engine, "web-1")
    deploy_id = deploy(engine, NEW, status=DeployStatus.IN_PROGRESS)
    with session_scope(engine) as session:
        pulls.record_run(
            session, deploy_id, "web-1", first=0, lines=["a"], status="running", message=None,
            allowed=None,
        )  # fmt: skip
        # Still running there: the agent names it.
        assert pulls.abandon_runs(session, machine_id, [deploy_id], now=utcnow()) == []
    with session_scope(engine) as session:
        # The agent restarted: it runs nothing.
        assert pulls.abandon_runs(session, machine_id, [], now=utcnow()) == [deploy_id]
        assert pulls.abandon_runs(session, machine_id, [], now=utcnow()) == []
    with session_scope(engine) as session:
        progress = pulls.progress(session, deploy_id, after=0, now=utcnow())
        assert progress.runs == {"web-1": ("failed", pulls.ABANDONED)}
        assert [text for _, _, text in progress.lines] == ["a", f">> Failed: {pulls.ABANDONED}"]
        assert not pulls.instructions(session, machine_id, places, ())
