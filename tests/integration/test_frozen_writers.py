"""A process frozen in the middle of a write (SIGSTOP, a paused VM, a host cut off by the
network) holds the row locks of its open transaction for as long as it stays frozen. On
PostgreSQL, the server ends such a session after a few seconds, so the reconciler can still
reap the runner whose row it was writing, and the environment moves on.

(SQLite has one writer at a time for the whole file: a frozen writer there blocks everyone,
which is why more than one process on SQLite is for tests and trials only.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from freight import vcs
from freight.db import Deploy, DeployStatus, make_engine, session_scope
from freight.db.migrate import upgrade
from freight.execution.handover import HandOver
from freight.execution.intake import DeployRequest
from freight.execution.ports import RunState
from freight.execution.reconciler import Reconciler, Timing
from freight.service import deploys
from tests.conftest import postgres_database
from tests.factories import GitRepo, RecordingOrchestrator, make_app

pytestmark = pytest.mark.postgres

# Takes the deploy's row as a runner's heartbeat does, says so, and freezes before committing.
FROZEN_WRITER = """
import os, signal, sys
from sqlalchemy import update
from freight.db import Deploy, make_engine, session_scope, utcnow
with session_scope(make_engine(sys.argv[1])) as session:
    session.execute(update(Deploy).where(Deploy.id == int(sys.argv[2])).values(
        heartbeat_at=utcnow()))
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
"""


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_a_runner_frozen_while_writing_its_row_is_still_reaped(
    pg_engine: Engine, tmp_path: Path
) -> None:
    with session_scope(pg_engine) as session:
        app = make_app(session, GitRepo.create(tmp_path / "origin")).name
    handover = HandOver(
        pg_engine,
        RecordingOrchestrator(),
        workspace_root=tmp_path / "workspaces",
        git=vcs.Access(allow_local=True),
    )
    deploy_id = handover.request(
        DeployRequest(app=app, environment="production", user="ana", sha="a" * 40, ref="main")
    ).deploy_id
    started = datetime.now(UTC)
    with session_scope(pg_engine) as session:
        session.execute(
            update(Deploy)
            .where(Deploy.id == deploy_id)
            .values(date_started=started, heartbeat_at=started, runner_host="elsewhere")
        )
        run_id = deploys.get_deploy(session, deploy_id).flow_run_id
    assert run_id
    handover.orchestrator.states[run_id] = RunState.RUNNING  # type: ignore[attr-defined]

    url = pg_engine.url.render_as_string(hide_password=False)
    writer = subprocess.Popen(
        [sys.executable, "-c", FROZEN_WRITER, url, str(deploy_id)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout and writer.stdout.readline() == "holding\n"
        reconciler = Reconciler(
            handover,
            timing=Timing(lost_after=15, submit_after=3, pending_for=20, worker_beat=2),
            workspace_root=tmp_path / "workspaces",
            grace=0,
            host="here",
            clock=lambda: started + timedelta(seconds=30),  # its heartbeat is long silent
        )
        done: list[list[str]] = []
        reaping = threading.Thread(target=lambda: done.append(reconciler.pass_once().ended))
        reaping.start()
        reaping.join(timeout=20)
        assert done == [[f"{app}/production#1"]], "the reconciler waited on the frozen writer"
        with session_scope(pg_engine) as session:
            lost = deploys.get_deploy(session, deploy_id)
            assert lost.status == DeployStatus.FAILED
            assert lost.reason and lost.reason.startswith("Runner lost")
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.communicate()
