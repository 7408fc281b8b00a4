"""Named leases in the Freight database: one holder at a time, lost by a holder that stops
renewing (it died, or it was paused past the lease), never by anyone releasing it for them."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight.db import Lease, utcnow


def take(session: Session, name: str, holder: str, *, ttl: float) -> bool:
    """Take or renew the lease for `ttl` seconds; False while someone else holds it."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.date_expires < now))
        .values(holder=holder, date_expires=expires)
    )
    if taken.rowcount:  # type: ignore[attr-defined]
        return True
    if session.get(Lease, name) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Lease(name=name, holder=holder, date_expires=expires))
    except IntegrityError:  # someone else made it first
        return False
    return True


def held(session: Session, prefix: str) -> bool:
    """Whether any lease named `prefix...` is held now."""
    found = session.scalar(
        select(Lease.name)
        .where(Lease.name.startswith(prefix, autoescape=True), Lease.date_expires > utcnow())
        .limit(1)
    )
    return found is not None


def give_up(session: Session, name: str, holder: str) -> None:
    """Release the lease, if this holder still has it."""
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(date_expires=datetime.fromtimestamp(0, tz=utcnow().tzinfo))
    )


def expired(session: Session, prefix: str) -> list[Lease]:
    """The leases named `prefix...` that ran out without being given up: holders that died."""
    epoch = datetime.fromtimestamp(0, tz=utcnow().tzinfo)
    return list(
        session.scalars(
            select(Lease).where(
                Lease.name.startswith(prefix, autoescape=True),
                Lease.date_expires < utcnow(),
                Lease.date_expires > epoch,
            )
        )
    )


def forget(session: Session, lease: Lease) -> None:
    """Mark an expired lease as dealt with (its holder's remains were cleaned up)."""
    lease.date_expires = datetime.fromtimestamp(0, tz=utcnow().tzinfo)
    session.flush()
