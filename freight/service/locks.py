"""Locks on an app (all environments) or one environment; a lock refuses deploys while active."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from freight.db import Deploy, Lock, utcnow
from freight.errors import AppLocked


def active_locks(session: Session, app_id: int, environment: str) -> list[Lock]:
    now = utcnow()
    return list(
        session.scalars(
            select(Lock)
            .where(
                Lock.app_id == app_id,
                or_(Lock.environment.is_(None), Lock.environment == environment),
                Lock.date_released.is_(None),
                or_(Lock.date_expires.is_(None), Lock.date_expires > now),
            )
            .order_by(Lock.id)
        )
    )


def assert_unlocked(session: Session, deploy: Deploy) -> None:
    """Refuse the deploy if a lock held by someone other than its user covers its app/env."""
    user = deploy.user.name if deploy.user else None
    for lock in active_locks(session, deploy.app_id, deploy.environment):
        if lock.owner != user:
            scope = (
                deploy.app.name
                if lock.environment is None
                else f"{deploy.app.name}/{lock.environment}"
            )
            raise AppLocked(f"{scope} is locked by {lock.owner}: {lock.reason}")
