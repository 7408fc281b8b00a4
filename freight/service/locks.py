"""Locks on an app (all environments) or one environment, with their history.

An active lock refuses deploys by anyone but its owner; `force` overrides it, and says so.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from freight.db import App, Deploy, Lock, utcnow
from freight.errors import AppLocked, InvalidEnvironment, InvalidRequest, NotFound
from freight.notifiers import LockNotice
from freight.service import apps

EXPIRED = "expired"  # who released a lock that ran out
REFUSED = "a lock"  # who cancelled a deploy that a lock stopped before it ran


def _active(now: datetime) -> list[object]:
    return [
        Lock.date_released.is_(None),
        or_(Lock.date_expires.is_(None), Lock.date_expires > now),
    ]


def active_locks(session: Session, app_id: int, environment: str | None) -> list[Lock]:
    """Locks covering the environment (None: the app-wide ones only)."""
    scope = (
        Lock.environment.is_(None)
        if environment is None
        else or_(Lock.environment.is_(None), Lock.environment == environment)
    )
    return list(
        session.scalars(
            select(Lock).where(Lock.app_id == app_id, scope, *_active(utcnow())).order_by(Lock.id)
        )
    )


def active_for_apps(session: Session, app_ids: list[int]) -> list[Lock]:
    return list(
        session.scalars(
            select(Lock).where(Lock.app_id.in_(app_ids), *_active(utcnow())).order_by(Lock.id)
        )
    )


def describe(lock: Lock) -> str:
    scope = lock.app.name if lock.environment is None else f"{lock.app.name}/{lock.environment}"
    return f"{scope} is locked by {lock.owner}: {lock.reason}"


def holding(lock: Lock) -> str:
    """What a lock does to automatic deploys, in a few words."""
    return f"locked by {lock.owner}: {lock.reason}"


def blocking_lock(session: Session, app_id: int, environment: str, user: str | None) -> Lock | None:
    return next(
        (lock for lock in active_locks(session, app_id, environment) if lock.owner != user), None
    )


def assert_unlocked(session: Session, deploy: Deploy) -> str | None:
    """Refuse the deploy if someone else's lock covers it, unless forced with a reason.

    Returns the description of a lock that force overrode, for the deploy's log.
    """
    user = deploy.user.name if deploy.user else None
    lock = blocking_lock(session, deploy.app_id, deploy.environment, user)
    if lock is None:
        return None
    if not deploy.force:
        raise AppLocked(describe(lock))
    if not deploy.force_reason:
        raise AppLocked(f"{describe(lock)}: forcing past it needs a reason")
    return describe(lock)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d`, `1w` as a timedelta."""
    match = _DURATION.match(text)
    if not match or int(match[1]) == 0:
        raise InvalidRequest(f"Invalid duration '{text}': use e.g. 30m, 2h, 1d")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def create_lock(
    session: Session,
    *,
    app: str,
    environment: str | None,
    reason: str,
    owner: str,
    expires: datetime | None = None,
) -> Lock:
    app_row = apps.get_app(session, app)
    if environment is not None and environment not in apps.spec_of(app_row).environments:
        raise InvalidEnvironment(f"App {app} has no environment '{environment}'")
    if not reason.strip():
        raise InvalidRequest("A lock needs a reason")
    if not owner.strip():
        raise InvalidRequest("A lock needs an owner")
    if expires is not None and expires <= utcnow():
        raise InvalidRequest("A lock's expiry must be in the future")
    lock = Lock(
        app_id=app_row.id,
        app=app_row,
        environment=environment,
        reason=reason.strip(),
        owner=owner.strip(),
        date_expires=expires,
    )
    session.add(lock)
    session.flush()
    return lock


def get_lock(session: Session, lock_id: int, *, apps: frozenset[str] | None = None) -> Lock:
    """The lock with this id; with `apps`, one of another app answers as an unknown id."""
    lock = session.get(Lock, lock_id)
    if lock is None or (apps is not None and lock.app.name not in apps):
        raise NotFound(f"Lock {lock_id} not found")
    return lock


def release_lock(session: Session, lock: Lock, *, by: str) -> Lock:
    if lock.date_released is not None:
        raise InvalidRequest(f"Lock {lock.id} was already released by {lock.released_by}")
    lock.released_by = by
    lock.date_released = utcnow()
    session.flush()
    return lock


def list_locks(
    session: Session,
    *,
    app: str | None = None,
    environment: str | None = None,
    include_history: bool = False,
    apps_allowed: frozenset[str] | None = None,
    limit: int | None = None,
) -> list[Lock]:
    query = select(Lock).join(App).order_by(Lock.id.desc())
    if app is not None:
        query = query.where(App.name == app)
    if environment is not None:
        query = query.where(or_(Lock.environment.is_(None), Lock.environment == environment))
    if apps_allowed is not None:
        query = query.where(App.name.in_(apps_allowed))
    if not include_history:
        query = query.where(*_active(utcnow()))
    return list(session.scalars(query.limit(limit)))


def app_locked_reason(session: Session, app_id: int) -> str | None:
    """Freight's `lockedReason`: the reason of the newest app-wide lock."""
    locks = active_locks(session, app_id, None)
    return locks[-1].reason if locks else None


def set_app_locked_reason(
    session: Session, app: App, reason: str | None, *, by: str
) -> list[tuple[Lock, str]]:
    """Freight's `lockedReason` semantics: a reason locks the app, None unlocks it. Returns
    the locks put on or taken off, with "locked" or "unlocked", for the notifiers."""
    current = active_locks(session, app.id, None)
    if reason is None:
        return [(release_lock(session, lock, by=by), "unlocked") for lock in current]
    if current:
        current[-1].reason = reason
        return []
    return [
        (create_lock(session, app=app.name, environment=None, reason=reason, owner=by), "locked")
    ]


def notice(lock: Lock, event: str, *, by: str) -> LockNotice:
    expires = lock.date_expires.isoformat().replace("+00:00", "Z") if lock.date_expires else None
    return LockNotice(
        event=event,
        app=lock.app.name,
        environment=lock.environment,
        reason=lock.reason,
        owner=lock.owner,
        by=by,
        expires=expires,
    )


def expire_due(session: Session) -> list[Lock]:
    """Mark the locks whose time is up as released by "expired" (their history says when)."""
    now = utcnow()
    due = list(
        session.scalars(
            select(Lock).where(
                Lock.date_released.is_(None),
                Lock.date_expires.is_not(None),
                Lock.date_expires <= now,
            )
        )
    )
    for lock in due:
        lock.released_by = EXPIRED
        lock.date_released = lock.date_expires
    session.flush()
    return due
