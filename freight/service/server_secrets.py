"""Random secrets the server makes once and keeps in its database, shared by all its processes
(the key of signed webhook URLs when no FREIGHT_API_KEY is set, the dashboard's cookie key)."""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from freight.db import ServerSecret


def get_or_create(session: Session, name: str) -> str:
    row = session.get(ServerSecret, name)
    if row is not None:
        return row.value
    try:
        with session.begin_nested():
            session.add(ServerSecret(name=name, value=secrets.token_urlsafe(32)))
    except IntegrityError:
        pass  # another process made it first; theirs counts
    row = session.get(ServerSecret, name, populate_existing=True)
    assert row is not None
    return row.value
