"""Dashboard sessions ended by logging out. A session lives in a signed cookie, so ending one
means remembering that its cookie no longer counts, until the cookie would have expired."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight.db import RevokedSession, utcnow


def revoke(session: Session, *, digest: str, expires: datetime) -> None:
    """Refuse the session whose cookie hashes to `digest` from now until `expires`."""
    if session.get(RevokedSession, digest) is not None:
        return
    try:
        with session.begin_nested():
            session.add(RevokedSession(digest=digest, date_expires=expires))
    except IntegrityError:
        pass  # the same session logged out twice at once; one row says it


def is_revoked(session: Session, digest: str) -> bool:
    return session.get(RevokedSession, digest) is not None


def forget_expired(session: Session) -> int:
    """Forget revocations whose cookies have expired (they are refused as expired anyway);
    how many were forgotten."""
    result = session.execute(delete(RevokedSession).where(RevokedSession.date_expires < utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
