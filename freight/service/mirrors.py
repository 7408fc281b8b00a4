"""The git mirrors each host holds, as its last sweep of its cache left them
(freight/execution/git_cache.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from freight.db import GitMirror, utcnow


@dataclass(frozen=True)
class MirrorSize:
    name: str
    bytes: int
    used: datetime | None


def record(session: Session, host: str, mirrors: list[MirrorSize]) -> None:
    """What the host's cache holds now, in place of what it held."""
    session.execute(delete(GitMirror).where(GitMirror.host == host))
    now = utcnow()
    session.add_all(
        GitMirror(host=host, name=m.name, bytes=m.bytes, date_used=m.used, date_measured=now)
        for m in mirrors
    )


def by_host(session: Session) -> dict[str, list[GitMirror]]:
    """Each host's mirrors, largest first."""
    found: dict[str, list[GitMirror]] = {}
    for row in session.scalars(
        select(GitMirror).order_by(GitMirror.host, GitMirror.bytes.desc(), GitMirror.name)
    ):
        found.setdefault(row.host, []).append(row)
    return found
