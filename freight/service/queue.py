"""The deploy queue: FIFO per app/env, one in progress at a time (a unique index guards that)."""

from __future__ import annotations

import logging

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from freight.db import Deploy, DeployStatus, utcnow
from freight.service.orchestration import Orchestrator

log = logging.getLogger(__name__)


def running(session: Session, app_id: int, environment: str) -> Deploy | None:
    return session.scalar(
        select(Deploy).where(
            Deploy.app_id == app_id,
            Deploy.environment == environment,
            Deploy.status == DeployStatus.IN_PROGRESS,
        )
    )


def pending(session: Session, app_id: int, environment: str) -> list[Deploy]:
    """The queue of one app/env, head first."""
    return list(
        session.scalars(
            select(Deploy)
            .where(
                Deploy.app_id == app_id,
                Deploy.environment == environment,
                Deploy.status == DeployStatus.PENDING,
            )
            .order_by(Deploy.id)
        )
    )


def claim_next(session: Session, app_id: int, environment: str) -> Deploy | None:
    """Move the head of the queue to in_progress, unless something already runs there."""
    if running(session, app_id, environment) is not None:
        return None
    # The row lock makes concurrent claimers and cancellers of the head take turns (PostgreSQL;
    # SQLite transactions already do): the second one sees the first one's outcome.
    head_id = session.scalar(
        select(Deploy.id)
        .where(
            Deploy.app_id == app_id,
            Deploy.environment == environment,
            Deploy.status == DeployStatus.PENDING,
        )
        .order_by(Deploy.id)
        .limit(1)
        .with_for_update()
    )
    if head_id is None:
        return None
    head = session.get_one(Deploy, head_id, populate_existing=True)
    if head.status != DeployStatus.PENDING:
        return None
    try:
        with session.begin_nested():
            head.status = DeployStatus.IN_PROGRESS
            # The reaper measures silence from here until the runner's own heartbeat starts.
            head.heartbeat_at = utcnow()
            if head.flow_run_id is None:
                head.hand_overs += 1
    except IntegrityError:
        session.refresh(head)
        return None
    return head


def unclaim(session: Session, deploy_id: int, *, lost_run: str | None = None) -> None:
    """Put a claimed deploy that never started back at the head of its queue (claims go by id,
    so it is the head again): its hand-over failed, or the run it got (`lost_run`) ended
    before it started."""
    session.execute(
        update(Deploy)
        .where(
            Deploy.id == deploy_id,
            Deploy.status == DeployStatus.IN_PROGRESS,
            Deploy.flow_run_id.is_(None) if lost_run is None else Deploy.flow_run_id == lost_run,
            Deploy.date_started.is_(None),
        )
        .values(status=DeployStatus.PENDING, heartbeat_at=None, flow_run_id=None)
    )


def advance(
    session: Session, orchestrator: Orchestrator, app_id: int, environment: str
) -> Deploy | None:
    """Hand the head of the queue to the orchestrator if the app/env is free.

    Commits the session's transaction: the claim is committed before the orchestrator is called,
    so no database lock is held during that network call (SQLite would block every writer
    meanwhile). A hand-over that fails is undone, and the maintenance flow retries it.
    """
    head = claim_next(session, app_id, environment)
    session.commit()
    if head is None or head.flow_run_id is not None:  # runs started in Prefect already have one
        return head
    try:
        run_id = orchestrator.submit(head)
    except Exception:
        log.exception("Could not hand %s to the orchestrator", head.name)
        unclaim(session, head.id)
        session.commit()
        return None
    # The run may have started (and recorded itself) already; both write the same id.
    session.execute(update(Deploy).where(Deploy.id == head.id).values(flow_run_id=run_id))
    session.commit()
    session.refresh(head)
    return head


def advance_all(session: Session, orchestrator: Orchestrator) -> list[Deploy]:
    """Hand over the head of every queue whose app/env is free (recovery after outages)."""
    other = aliased(Deploy)
    busy = exists().where(
        other.app_id == Deploy.app_id,
        other.environment == Deploy.environment,
        other.status == DeployStatus.IN_PROGRESS,
    )
    keys = session.execute(
        select(Deploy.app_id, Deploy.environment)
        .where(Deploy.status == DeployStatus.PENDING, ~busy)
        .distinct()
    ).all()
    started = []
    for app_id, environment in keys:
        deploy = advance(session, orchestrator, app_id, environment)
        if deploy is not None:
            started.append(deploy)
    return started
