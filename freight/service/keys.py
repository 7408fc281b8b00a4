"""API keys: scopes, optional app limits, hashing, and who is calling."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from freight.db import ApiKey, utcnow
from freight.errors import Forbidden, InvalidRequest, NotFound
from freight.service.apps import not_found

KEY_PREFIX = "frt_"


class Scope(StrEnum):
    """Each of read, deploy and admin includes the ones before it: admin can deploy, deploy
    can read. `agent` stands apart: a machine's agent checks in, reads the desired version of
    its apps and writes the output of their pull deploys, and may do nothing else (not even
    read), so that a key left on every machine opens nothing more."""

    READ = "read"
    DEPLOY = "deploy"
    ADMIN = "admin"
    AGENT = "agent"

    @property
    def rank(self) -> int:
        """The place in read < deploy < admin; -1 for agent, which includes none of them."""
        return RANKED.index(self) if self in RANKED else -1


RANKED = (Scope.READ, Scope.DEPLOY, Scope.ADMIN)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a named key with its scopes and, if limited, the apps it may touch."""

    name: str
    scopes: frozenset[Scope]
    apps: frozenset[str] | None = None
    key_id: int | None = None
    last_used: datetime | None = None
    # Whom the key acts for, when a client says so once for all (a dashboard session's login).
    person: str | None = None

    @property
    def user(self) -> str:
        """The name deploys, locks and cancels record when a request names nobody."""
        return self.person or self.name

    def allows(self, scope: Scope) -> bool:
        if scope == Scope.AGENT:  # an admin may do what an agent does
            return Scope.AGENT in self.scopes or self.allows(Scope.ADMIN)
        return any(mine.rank >= scope.rank for mine in self.scopes)

    def allows_app(self, app: str) -> bool:
        return self.apps is None or app in self.apps

    def require_unlimited(self) -> None:
        """Managing keys needs an admin key for every app: a limited one could widen itself."""
        self.require(Scope.ADMIN)
        if self.apps is not None:
            raise Forbidden(
                f"Key '{self.name}' is limited to some apps; keys need an admin key for all"
            )

    def require(self, scope: Scope, app: str | None = None) -> None:
        """Refuse a scope the key lacks (403); an app outside its limit answers as an unknown
        app (404), so that a key learns nothing of the apps it may not see."""
        if not self.allows(scope):
            raise Forbidden(f"Key '{self.name}' lacks the '{scope}' scope")
        if app is not None and not self.allows_app(app):
            raise not_found(app)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(values: Sequence[str]) -> frozenset[Scope]:
    if not values:
        raise InvalidRequest("A key needs at least one scope (read, deploy, admin, agent)")
    try:
        return frozenset(Scope(value) for value in values)
    except ValueError:
        bad = next(v for v in values if v not in set(Scope))
        raise InvalidRequest(f"Unknown scope '{bad}' (known: read, deploy, admin, agent)") from None


def create_key(
    session: Session,
    *,
    name: str,
    scopes: Sequence[str],
    apps: Sequence[str] | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned here only, the database keeps its hash."""
    if not name.strip():
        raise InvalidRequest("A key needs a name")
    parsed = parse_scopes(scopes)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name.strip(),
        key_hash=hash_key(key),
        prefix=key[:10],
        scopes=sorted(parsed, key=list(Scope).index),
        apps=sorted(set(apps)) if apps else None,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.date_revoked.is_(None))
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: int, *, by: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or row.date_revoked is not None:
        raise NotFound(f"Key {key_id} not found")
    row.revoked_by = by
    row.date_revoked = utcnow()
    session.flush()
    return row


# Freight's single shared key (FREIGHT_API_KEY): whoever holds it administers everything.
SHARED_KEY = Principal(name="api-key", scopes=frozenset({Scope.ADMIN}))


def authenticate(session: Session, key: str, *, admin_key: str | None) -> Principal | None:
    """The principal a presented key stands for, or None when it is unknown or revoked."""
    if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return SHARED_KEY
    return _principal(session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key))))


def principal_of(session: Session, key_id: int) -> Principal | None:
    """The principal of a stored key by its id (a dashboard session), None once revoked."""
    return _principal(session.get(ApiKey, key_id))


def _principal(row: ApiKey | None) -> Principal | None:
    if row is None or row.date_revoked is not None:
        return None
    return Principal(
        name=row.name,
        scopes=frozenset(Scope(s) for s in row.scopes),
        apps=frozenset(row.apps) if row.apps is not None else None,
        key_id=row.id,
        last_used=row.date_last_used,
    )


# A key's last use is recorded to the minute: a write per request would slow every read.
USE_RESOLUTION = timedelta(minutes=1)


def use_is_stale(who: Principal) -> bool:
    return who.key_id is not None and (
        who.last_used is None or utcnow() - who.last_used >= USE_RESOLUTION
    )


def record_use(session: Session, who: Principal) -> None:
    """Note that a stored key was used (callers ask `use_is_stale` first)."""
    row = session.get(ApiKey, who.key_id) if who.key_id is not None else None
    if row is not None:
        row.date_last_used = utcnow()


def has_admin_key(session: Session) -> bool:
    return any(Scope.ADMIN in row.scopes for row in list_keys(session))


def bootstrap_admin_key(session: Session) -> str | None:
    """On a first start (no admin key yet), make one and return it, for printing once."""
    if has_admin_key(session):
        return None
    _, key = create_key(session, name="admin", scopes=[Scope.ADMIN], created_by="freight up")
    return key
