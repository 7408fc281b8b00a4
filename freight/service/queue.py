"""The deploy queue per app/env: one in progress at a time (a unique index guards that), the
rest in creation order, except those moved to the front (rollbacks go there by themselves)."""

from __future__ import annotations

import logging

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from freight.db import Deploy, DeployStatus, utcnow
from freight.errors import InvalidRequest
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


# The order a queue runs in: the highest priority first, then the oldest.
QUEUE_ORDER = (Deploy.priority.desc(), Deploy.id)


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
            .order_by(*QUEUE_ORDER)
        )
    )


def move_to_front(session: Session, deploy: Deploy) -> Deploy:
    """Run this queued deploy before every other queued one of its app/env."""
    session.execute(select(Deploy.id).where(Deploy.id == deploy.id).with_for_update())
    session.refresh(deploy)
    if deploy.status != DeployStatus.PENDING:
        raise InvalidRequest(f"Deploy {deploy.name} is {deploy.status}: only a queued deploy moves")
    deploy.priority = max(
        deploy.priority, front_priority(session, deploy.app_id, deploy.environment, deploy.id)
    )
    session.flush()
    return deploy


def front_priority(
    session: Session, app_id: int, environment: str, excluding: int | None = None
) -> int:
    """A priority that puts a deploy before every queued one of the app/env."""
    query = select(func.max(Deploy.priority)).where(
        Deploy.app_id == app_id,
        Deploy.environment == environment,
        Deploy.status == DeployStatus.PENDING,
    )
    if excluding is not None:
        query = query.where(Deploy.id != excluding)
    return (session.scalar(query) or 0) + 1


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
        .order_by(*QUEUE_ORDER)
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
