"""Locks on an app (all environments) or one environment, with their history.

An active lock refuses deploys by anyone but its owner; a freeze, a lock with a start and an
end, refuses everyone's. `force` with a reason goes past both, and says so (the rule is
freight/service/barriers.py). A freeze is announced when it begins and when it ends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from freight.db import App, Lock, utcnow
from freight.errors import InvalidEnvironment, InvalidRequest, MissingArgument, NotFound
from freight.notifiers import LockNotice
from freight.service import apps

EXPIRED = "expired"  # who released a lock that ran out


def _active(now: datetime) -> list[object]:
    return [
        Lock.date_released.is_(None),
        or_(Lock.date_starts.is_(None), Lock.date_starts <= now),
        or_(Lock.date_expires.is_(None), Lock.date_expires > now),
    ]


def in_force(lock: Lock, at: datetime | None = None) -> bool:
    """`_active`, for a lock at hand."""
    at = at or utcnow()
    return (
        lock.date_released is None
        and (lock.date_starts is None or lock.date_starts <= at)
        and (lock.date_expires is None or lock.date_expires > at)
    )


def scheduled(lock: Lock) -> bool:
    """A freeze that has not begun yet (and was not lifted before it did)."""
    return (
        lock.date_released is None and lock.date_starts is not None and lock.date_starts > utcnow()
    )


def _current_or_coming(now: datetime) -> list[object]:
    return [
        Lock.date_released.is_(None),
        or_(Lock.date_expires.is_(None), Lock.date_expires > now),
    ]


def active_locks(
    session: Session, app_id: int, environment: str | None, *, at: datetime | None = None
) -> list[Lock]:
    """Locks and freezes in force over the environment (None: the app-wide ones only)."""
    scope = (
        Lock.environment.is_(None)
        if environment is None
        else or_(Lock.environment.is_(None), Lock.environment == environment)
    )
    return list(
        session.scalars(
            select(Lock)
            .where(Lock.app_id == app_id, scope, *_active(at or utcnow()))
            .order_by(Lock.id)
        )
    )


def active_for_apps(session: Session, app_ids: list[int]) -> list[Lock]:
    return list(
        session.scalars(
            select(Lock).where(Lock.app_id.in_(app_ids), *_active(utcnow())).order_by(Lock.id)
        )
    )


def _stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def describe(lock: Lock) -> str:
    scope = lock.app.name if lock.environment is None else f"{lock.app.name}/{lock.environment}"
    if lock.freeze:
        assert lock.date_expires is not None
        return f"{scope} is frozen until {_stamp(lock.date_expires)} by {lock.owner}: {lock.reason}"
    return f"{scope} is locked by {lock.owner}: {lock.reason}"


def holding(lock: Lock) -> str:
    """What a lock does to automatic deploys, in a few words."""
    if lock.freeze:
        assert lock.date_expires is not None
        return f"frozen until {_stamp(lock.date_expires)} by {lock.owner}: {lock.reason}"
    return f"locked by {lock.owner}: {lock.reason}"


def create_lock(
    session: Session,
    *,
    app: str,
    environment: str | None,
    reason: str,
    owner: str,
    expires: datetime | None = None,
    starts: datetime | None = None,
    freeze: bool = False,
) -> Lock:
    """A lock (holds everyone but its owner, until released or `expires`), or a freeze (holds
    everyone, from `starts` or now until `expires`)."""
    app_row = apps.get_app(session, app)
    if environment is not None and environment not in apps.spec_of(app_row).environments:
        raise InvalidEnvironment(f"App {app} has no environment '{environment}'")
    if not reason.strip():
        raise InvalidRequest("A lock needs a reason")
    if not owner.strip():
        raise InvalidRequest("A lock needs an owner")
    if freeze and expires is None:
        raise MissingArgument("until: a freeze needs an end")
    if expires is not None and expires <= utcnow():
        raise InvalidRequest(
            "until: a freeze must end in the future"
            if freeze
            else "A lock's expiry must be in the future"
        )
    if starts is not None and expires is not None and starts >= expires:
        raise InvalidRequest("from: a freeze must start before it ends")
    lock = Lock(
        app_id=app_row.id,
        app=app_row,
        environment=environment,
        reason=reason.strip(),
        owner=owner.strip(),
        date_expires=expires,
        date_starts=starts if freeze else None,
        freeze=freeze,
    )
    if freeze and (starts is None or starts <= utcnow()):
        lock.date_begun = utcnow()  # its creation's notice says it is frozen
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
        query = query.where(*_current_or_coming(utcnow()))
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


def _wire(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def notice(lock: Lock, event: str, *, by: str) -> LockNotice:
    return LockNotice(
        event=event,
        app=lock.app.name,
        environment=lock.environment,
        reason=lock.reason,
        owner=lock.owner,
        by=by,
        expires=_wire(lock.date_expires),
        freeze=lock.freeze,
        starts=_wire(lock.date_starts),
    )


def begin_due(session: Session) -> list[Lock]:
    """Freezes whose time has come and whose beginning was not announced yet: marked begun."""
    now = utcnow()
    due = list(
        session.scalars(
            select(Lock).where(Lock.freeze.is_(True), Lock.date_begun.is_(None), *_active(now))
        )
    )
    for lock in due:
        lock.date_begun = now
    session.flush()
    return due


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
