"""Deploy logs as offset-addressed chunks; offsets and sizes count characters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from freight.db import Deploy, LogChunk, changes


def storable(text: str) -> str:
    """The text as a database can keep it: NUL characters (which PostgreSQL refuses in text)
    made visible as `\\x00`, so that a command printing one neither fails nor hides it."""
    return text.replace("\x00", "\\x00")


def write_chunk(session: Session, deploy_id: int, text: str, *, claim: str | None = None) -> bool:
    """Append text to the log. With `claim`, only while the deploy's claim is that one: a
    runner whose claim was taken (reaped) writes nothing more. False if nothing was written."""
    text = storable(text)
    # Taking the size from the row under the write keeps offsets contiguous between writers.
    query = select(Deploy.log_size, Deploy.claim).where(Deploy.id == deploy_id)
    row = session.execute(query.with_for_update()).one_or_none()
    if row is None:
        return False
    size, current = row
    if claim is not None and current != claim:
        return False
    offset = size or 0
    session.add(LogChunk(deploy_id=deploy_id, offset=offset, size=len(text), text=text))
    grown = update(Deploy).where(Deploy.id == deploy_id).values(log_size=offset + len(text))
    session.execute(grown.execution_options(**changes.UNSEEN))
    return True


def append(session: Session, deploy: Deploy, line: str) -> None:
    """Add one line to a deploy's log in the caller's transaction."""
    session.flush()
    write_chunk(session, deploy.id, line + "\n")
    session.refresh(deploy, ["log_size"])


@dataclass(frozen=True)
class Chunk:
    text: str
    date: datetime


@dataclass(frozen=True)
class LogPage:
    next_offset: int
    chunks: list[Chunk]


def read_log(
    session: Session, deploy_id: int, *, offset: int = 0, limit: int | None = None
) -> LogPage:
    """Chunks from offset; offset -1 tails: the chunks holding the last `limit` characters."""
    query = select(LogChunk).where(LogChunk.deploy_id == deploy_id).order_by(LogChunk.offset)
    if offset == -1:
        total = session.scalar(select(Deploy.log_size).where(Deploy.id == deploy_id)) or 0
        if limit:
            query = query.where(LogChunk.offset + LogChunk.size > max(total - limit, 0))
    else:
        if offset:
            query = query.where(LogChunk.offset >= offset)
        if limit:
            query = query.where(LogChunk.offset < offset + limit)
    rows = list(session.scalars(query))
    if not rows:
        return LogPage(next_offset=offset, chunks=[])
    return LogPage(
        next_offset=rows[-1].offset + rows[-1].size,
        chunks=[Chunk(text=row.text, date=row.date_created) for row in rows],
    )


def tail_lines(session: Session, deploy_id: int, count: int, *, window: int = 16384) -> list[str]:
    """The last `count` lines of the log (looking at most `window` characters back)."""
    text = "".join(c.text for c in read_log(session, deploy_id, offset=-1, limit=window).chunks)
    return text.splitlines()[-count:]
