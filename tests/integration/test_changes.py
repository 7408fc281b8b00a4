"""What the dashboards' streams are fed: each write that changes what a page shows leaves a
change row in its own transaction (beats and log sizes do not); one reader per API process
hands them to the open streams, also a change whose id committed after a higher one's; a
deploy's recorded steps read in order. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import cast

import pytest
from sqlalchemy import Engine, insert, make_url, select, update

from freight.dashboard import stream
from freight.db import Change, Deploy, DeployStatus, changes, session_scope, utcnow
from freight.execution.delivery import Courier
from freight.execution.monitor import Claim
from freight.execution.record import RunRecord
from freight.service import deploys, locks, logs, steps
from freight.service.steps import StepState
from tests.conftest import _pg_admin
from tests.contract.helpers import add_deploys
from tests.factories import GitRepo, make_app


def recorded(engine: Engine, after: int = 0) -> list[tuple[int | None, bool]]:
    with session_scope(engine, read_only=True) as session:
        return [
            (seen.deploy_id, seen.log_only)
            for seen in changes.since(session, after)
            if seen.id > after
        ]


def latest(engine: Engine) -> int:
    with session_scope(engine, read_only=True) as session:
        return changes.latest(session)


def test_writes_a_page_shows_leave_a_change_and_beats_do_not(
    engine: Engine, origin: GitRepo
) -> None:
    with session_scope(engine) as session:
        app = make_app(session, origin, command="true")
        app_id, name = app.id, app.name
    add_deploys(engine, app_id, "staging", 1, status=DeployStatus.IN_PROGRESS, claim="mine")
    with session_scope(engine, read_only=True) as session:
        (made,) = deploys.list_deploys(session, deploys.DeployFilter(app=name))
        deploy_id = made.id
    mark = latest(engine)
    # A runner's beat and a log's size are not news to anyone; the log's new chunk is, to its
    # page only.
    runner = RunRecord(engine, deploy_id, claim="mine", courier=cast(Courier, None))
    assert runner.look(beat=True) == Claim.HELD
    assert recorded(engine, mark) == []
    with session_scope(engine) as session:
        logs.write_chunk(session, deploy_id, "line\n")
    assert recorded(engine, mark) == [(deploy_id, True)]
    # A deploy's state, its steps: news to its page and the overview.
    mark = latest(engine)
    with session_scope(engine) as session:
        deploy = deploys.get_deploy(session, deploy_id)
        deploy.waiting_for = "no worker serves work queue 'deploys'"
    with session_scope(engine) as session:
        steps.began(session, deploy_id, "check-lock", claim=None)
    assert recorded(engine, mark) == [(deploy_id, False), (deploy_id, False)]
    # A lock; a statement that sets what a page shows (which deploy: unknown, so everyone's).
    mark = latest(engine)
    with session_scope(engine) as session:
        locks.create_lock(session, app=name, environment="staging", reason="r", owner="o")
    with session_scope(engine) as session:
        session.execute(update(Deploy).where(Deploy.id == deploy_id).values(waiting_for=None))
    assert recorded(engine, mark) == [(None, False), (None, False)]
    # Kept an hour.
    with session_scope(engine) as session:
        assert changes.forget_older(session, now=utcnow() + timedelta(hours=2)) > 0
    assert recorded(engine) == []


def test_the_reader_hands_every_change_to_the_streams_also_one_committed_late(
    engine: Engine,
) -> None:
    async def scenario() -> list[stream.Batch]:
        hub = stream.Hub(engine, heartbeat_interval=5, poll=0.05)
        hub.start()
        await hub.current()
        seq = hub.seq
        with session_scope(engine) as session:
            session.execute(insert(Change).values(id=100, deploy_id=7, log_only=False))
        first = await hub.after(seq, 5)
        # Id 90 commits after 100 was read (PostgreSQL hands ids out before commit).
        with session_scope(engine) as session:
            session.execute(insert(Change).values(id=90, deploy_id=8, log_only=True))
        second = await hub.after(first[-1].seq, 5)
        quiet = await hub.after(second[-1].seq, 0.3)
        await hub.stop()
        return [*first, *second, *quiet]

    batches = asyncio.run(scenario())
    assert [(b.deploys, b.log_only) for b in batches] == [
        (frozenset({7}), frozenset()),
        (frozenset({8}), frozenset({8})),
    ]
    assert batches[-1].last_id == 100


def test_the_overview_stream_sends_the_part_and_a_stream_back_from_away_catches_up(
    engine: Engine,
) -> None:
    rendered: list[object] = []

    async def render(seen: object) -> str | None:
        rendered.append(seen)
        return f"<p>as of {seen}</p>"

    async def never() -> bool:
        return False

    async def scenario() -> tuple[list[str], list[str]]:
        hub = stream.Hub(engine, heartbeat_interval=5, poll=0.05)
        live = stream.overview(hub, None, render, never)
        opening = [await anext(live), await anext(live)]
        with session_scope(engine) as session:
            session.execute(insert(Change).values(deploy_id=None, log_only=False))
        opening.append(await asyncio.wait_for(anext(live), 5))
        # A page that was away (the change id it knows is older) gets the part at once.
        back = stream.overview(hub, "0", render, never)
        again = [await anext(back), await anext(back), await anext(back)]
        await hub.stop()
        return opening, again

    opening, again = asyncio.run(scenario())
    assert opening[0].startswith("retry: ")
    assert opening[1].startswith("event: hello\n")
    assert opening[2].startswith("event: part\n")
    assert again[2].startswith("event: part\n")
    # Both as of the same change: the one build every page that sees it alike shares.
    assert len(rendered) == 2 and rendered[0] == rendered[1]


def test_a_deploys_steps_read_in_order_waiting_then_skipped(
    engine: Engine, origin: GitRepo
) -> None:
    with session_scope(engine) as session:
        app_id = make_app(session, origin, command="true").id
    add_deploys(engine, app_id, "staging", 1, status=DeployStatus.IN_PROGRESS)
    with session_scope(engine) as session:
        deploy = session.scalars(select(Deploy).where(Deploy.app_id == app_id)).one()
        deploy.date_finished = None
        steps.began(session, deploy.id, "check-lock", claim=None)
        steps.ended(session, deploy.id, "check-lock", StepState.COMPLETED, claim=None)
        steps.began(session, deploy.id, "check-github-status", claim=None)
        shown = steps.of(session, deploy, shows_verify=False)
        assert [(s.name, s.state) for s in shown] == [
            ("check-lock", StepState.COMPLETED),
            ("check-github-status", StepState.RUNNING),
            ("prepare-workspace", StepState.WAITING),
            ("run-provider", StepState.WAITING),
            ("cleanup-workspace", StepState.WAITING),
            ("notify", StepState.WAITING),
        ]
        # A claim taken by another run: this one records nothing more.
        deploy.claim = "theirs"
        steps.ended(session, deploy.id, "check-github-status", StepState.FAILED, claim="mine")
        deploy.date_finished = utcnow()
        shown = steps.of(session, deploy, shows_verify=True)
        assert shown[1].state == StepState.RUNNING
        assert [s.state for s in shown[2:]] == [StepState.SKIPPED] * 5
        assert [s.name for s in shown][4] == "verify"


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_streams_outlive_their_database_away_for_30s_and_then_see_the_next_change(
    engine: Engine, database_url: str
) -> None:
    name = make_url(database_url).database

    def away(allowed: bool) -> None:
        admin = _pg_admin()
        with admin.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:  # and every connection it had is cut
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
        admin.close()

    async def render(seen: object) -> str | None:
        return "<p>the part</p>"

    async def never() -> bool:
        return False

    async def scenario() -> str:
        hub = stream.Hub(engine, heartbeat_interval=5, poll=0.1)
        live = stream.overview(hub, None, render, never)
        assert (await anext(live)).startswith("retry: ")
        assert (await anext(live)).startswith("event: hello\n")
        await asyncio.to_thread(away, False)
        await asyncio.sleep(30)  # the reader keeps failing to read, and keeps trying
        await asyncio.to_thread(away, True)
        with session_scope(engine) as session:
            session.execute(insert(Change).values(deploy_id=None, log_only=False))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            event = await asyncio.wait_for(anext(live), 20)
            if event.startswith("event: part\n"):
                break
        await hub.stop()
        return event

    event = asyncio.run(scenario())
    # Only a reader that lived through it could have seen this change.
    assert event.startswith("event: part\n") and "the part" in event
