"""Many runners at once: the queue holds one deploy per app/env, in creation order (both DBs)."""

from __future__ import annotations

import itertools
import threading

import pytest
from sqlalchemy import Engine

from freight.db import DeployStatus, session_scope
from freight.errors import InvalidRequest
from freight.execution.handover import HandOver
from freight.service import deploys, queue
from freight.settings import Settings
from tests.factories import (
    GitRepo,
    RecordingOrchestrator,
    make_app,
    register,
    request,
    run_inline,
)


def test_twenty_concurrent_deploys_number_and_run_one_at_a_time_in_order(
    engine: Engine, settings: Settings, origin: GitRepo
) -> None:
    """Each thread plays a deploy started from Prefect: register, then wait for its turn."""
    # Staging's deploys wait until production's has run: were production queued behind them,
    # the first would give up after a minute and fail.
    settings.home.mkdir(parents=True, exist_ok=True)
    flag = settings.home / "production-ran"
    command = (
        f'if [ "{{environment}}" = production ]; then touch {flag}; else '
        f"for _ in $(seq 1200); do [ -f {flag} ] && break; sleep 0.05; done; "
        f"[ -f {flag} ]; fi && echo {{number}} && sleep 0.2"
    )
    with session_scope(engine) as session:
        app = make_app(session, origin, command=command).name
    orchestrator = RecordingOrchestrator()
    handover = HandOver(
        engine, orchestrator, workspace_root=settings.workspaces, git=settings.git_access()
    )
    barrier = threading.Barrier(21)
    results: dict[int, DeployStatus | None] = {}
    errors: list[BaseException] = []

    def runner(environment: str) -> None:
        try:
            barrier.wait()
            deploy_id, run_id = register(handover, app, environment, user="ana")
            results[deploy_id] = run_inline(
                settings, handover, deploy_id, run_id=run_id, claim=None
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=("staging",)) for _ in range(20)]
    threads.append(threading.Thread(target=runner, args=("production",)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert set(results.values()) == {DeployStatus.FINISHED}
    assert orchestrator.submitted == []  # every deploy already had its run: nothing handed over

    with session_scope(engine) as session:
        done = [deploys.get_deploy(session, deploy_id) for deploy_id in results]
    staging = sorted((d for d in done if d.environment == "staging"), key=lambda d: d.number)
    [production] = [d for d in done if d.environment == "production"]
    assert [d.number for d in staging] == list(range(1, 21))
    assert [d.id for d in staging] == sorted(d.id for d in staging)
    for earlier, later in itertools.pairwise(staging):
        assert earlier.date_finished and later.date_started
        assert later.date_started >= earlier.date_finished, (earlier.name, later.name)
    assert production.number == 1
    # It did not wait for staging: it began before staging's first deploy could end.
    assert production.date_started and staging[0].date_finished
    assert production.date_started < staging[0].date_finished


def test_a_queued_deploy_moves_to_the_front_and_rollbacks_go_there(
    engine: Engine, settings: Settings, origin: GitRepo
) -> None:
    orchestrator = RecordingOrchestrator()
    handover = HandOver(
        engine, orchestrator, workspace_root=settings.workspaces, git=settings.git_access()
    )
    with session_scope(engine) as session:
        app = make_app(session, origin).name

    def create(ref: str | None = None) -> int:
        return request(handover, app, ref=ref)

    def finish_running() -> None:
        with session_scope(engine) as session:
            running = queue.running(session, deploys.get_deploy(session, ids[0]).app_id, "staging")
            assert running is not None
            deploys.mark_ended(session, running, DeployStatus.FINISHED, None)
            app_id = running.app_id
        handover.kick(app_id, "staging")

    ids = [create()]  # #1 runs (the first commit), #2 #3 #4 (the second) wait
    origin.commit("second")
    ids += [create() for _ in range(3)]
    with session_scope(engine) as session:
        queue.move_to_front(session, deploys.get_deploy(session, ids[3]))
        app_id = deploys.get_deploy(session, ids[0]).app_id
        assert [d.number for d in queue.pending(session, app_id, "staging")] == [4, 2, 3]
        with pytest.raises(InvalidRequest, match="only a queued deploy moves"):
            queue.move_to_front(session, deploys.get_deploy(session, ids[0]))
    finish_running()  # #1 finishes: #4 is handed over next
    assert orchestrator.submitted == [ids[0], ids[3]]
    finish_running()  # #4 finishes and #2 runs; #3 waits
    rollback = create(":previous")  # back to #1's sha, before #3
    with session_scope(engine) as session:
        assert [d.id for d in queue.pending(session, app_id, "staging")] == [rollback, ids[2]]
