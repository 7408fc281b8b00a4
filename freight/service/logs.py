"""Deploy logs as offset-addressed chunks; offsets and sizes count characters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from freight.db import Deploy, LogChunk, session_scope


def _write_chunk(session: Session, deploy_id: int, text: str) -> None:
    # Taking the size from the row under the write keeps offsets contiguous between writers.
    size = session.scalar(select(Deploy.log_size).where(Deploy.id == deploy_id).with_for_update())
    offset = size or 0
    session.add(LogChunk(deploy_id=deploy_id, offset=offset, size=len(text), text=text))
    session.execute(
        update(Deploy).where(Deploy.id == deploy_id).values(log_size=offset + len(text))
    )


def append(session: Session, deploy: Deploy, line: str) -> None:
    """Add one line to a deploy's log in the caller's transaction."""
    session.flush()
    _write_chunk(session, deploy.id, line + "\n")
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


class LogWriter:
    """Collects output lines from any thread and writes them as one chunk per flush interval.

    Batching keeps the database load flat for a command that prints thousands of lines a second,
    while the interval bounds how late a line becomes readable. `also` gets each written chunk
    (e.g. for the orchestrator's own run log, which also prefers few large records).
    """

    def __init__(
        self,
        engine: Engine,
        deploy_id: int,
        *,
        flush_interval: float,
        on_error: Callable[[Exception], None] | None = None,
        also: Callable[[str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._deploy_id = deploy_id
        self._interval = flush_interval
        self._on_error = on_error
        self._also = also
        self._pending: list[str] = []
        self._lock = threading.Lock()
        # Held from taking the lines to committing them, so two flushes never swap order.
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"log-{deploy_id}", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        with self._lock:
            self._pending.append(line + "\n")

    def flush(self) -> None:
        with self._flushing:
            with self._lock:
                text, self._pending = "".join(self._pending), []
            if not text:
                return
            try:
                with session_scope(self._engine) as session:
                    _write_chunk(session, self._deploy_id, text)
            except Exception:
                with self._lock:
                    self._pending.insert(0, text)
                raise
        if self._also:
            self._also(text.removesuffix("\n"))

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join()
        self.flush()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            try:
                self.flush()
            except Exception as exc:  # keep the deploy going; the next flush retries the lines
                if self._on_error:
                    self._on_error(exc)
