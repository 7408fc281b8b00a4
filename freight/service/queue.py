"""The deploy queue per app/env: one in progress at a time (a unique index guards that), the
rest in creation order, except those moved to the front (rollbacks go there by themselves)."""

from __future__ import annotations

import secrets

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from freight.db import Deploy, DeployStatus, utcnow
from freight.errors import InvalidRequest


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


def new_claim() -> str:
    return secrets.token_hex(16)


def claim_next(session: Session, app_id: int, environment: str) -> Deploy | None:
    """Move the head of the queue to in_progress under a new claim, unless something already
    runs there. The claim's token fences the run it is handed to (see `holds_claim`)."""
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
            head.claim = new_claim()
            # The reconciler measures silence from here until the runner's own heartbeat starts.
            head.date_claimed = head.heartbeat_at = utcnow()
            if head.flow_run_id is None:
                head.hand_overs += 1
    except IntegrityError:
        session.refresh(head)
        return None
    return head


def reclaim(session: Session, deploy: Deploy) -> None:
    """Give a claimed deploy that never started a new claim, to be handed over again: the run
    it had was lost before it started. Whatever holds the old claim can no longer write."""
    deploy.claim = new_claim()
    deploy.date_claimed = deploy.heartbeat_at = utcnow()
    deploy.flow_run_id = None
    deploy.hand_overs += 1
    session.flush()


def record_run(session: Session, deploy_id: int, *, claim: str, run_id: str) -> bool:
    """Note the run a claim was handed to; False if the claim is no longer the deploy's
    (cancelled or taken meanwhile): that run must not go on. A run that began the deploy itself
    while it was being handed over (a worker took it before the hand-over's answer came) is the
    deploy's own, whether it still runs or has ended it already."""
    done = session.execute(
        update(Deploy)
        .where(
            Deploy.id == deploy_id,
            Deploy.status == DeployStatus.IN_PROGRESS,
            Deploy.claim == claim,
            or_(Deploy.flow_run_id.is_(None), Deploy.flow_run_id == run_id),
        )
        .values(flow_run_id=run_id)
    )
    if done.rowcount:  # type: ignore[attr-defined]
        return True
    return session.scalar(select(Deploy.flow_run_id).where(Deploy.id == deploy_id)) == run_id


def holds_claim(session: Session, deploy_id: int, claim: str) -> bool:
    """Whether `claim` is still the deploy's running claim (a fenced writer asks first)."""
    return (
        session.scalar(
            select(Deploy.id).where(
                Deploy.id == deploy_id,
                Deploy.status == DeployStatus.IN_PROGRESS,
                Deploy.claim == claim,
            )
        )
        is not None
    )


def idle_queues(session: Session) -> list[tuple[int, str]]:
    """(app id, environment) of every queue with deploys waiting and nothing running."""
    other = aliased(Deploy)
    busy = exists().where(
        other.app_id == Deploy.app_id,
        other.environment == Deploy.environment,
        other.status == DeployStatus.IN_PROGRESS,
    )
    return [
        (app_id, environment)
        for app_id, environment in session.execute(
            select(Deploy.app_id, Deploy.environment)
            .where(Deploy.status == DeployStatus.PENDING, ~busy)
            .distinct()
        )
    ]
