"""Engine and sessions for the Freight database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

# Records dashboard-visible changes on every flush (see the module).
from freight.db import changes as changes
from freight.db.models import (
    ApiKey,
    App,
    AppSource,
    AutoDeployState,
    Base,
    Change,
    ControlPlane,
    Deploy,
    DeployStatus,
    DeployStep,
    GitMirror,
    HookDelivery,
    Lease,
    LiveRelease,
    Lock,
    LogChunk,
    Machine,
    MachineApp,
    MachineEvent,
    MachineOutput,
    MachineRun,
    MachineVersion,
    Notification,
    NotifierState,
    PullOrder,
    Repository,
    RevokedSession,
    ServerSecret,
    User,
    Worker,
    utcnow,
)

__all__ = [
    "ApiKey",
    "App",
    "AppSource",
    "AutoDeployState",
    "Base",
    "Change",
    "ControlPlane",
    "Deploy",
    "DeployStatus",
    "DeployStep",
    "GitMirror",
    "HookDelivery",
    "Lease",
    "LiveRelease",
    "Lock",
    "LogChunk",
    "Machine",
    "MachineApp",
    "MachineEvent",
    "MachineOutput",
    "MachineRun",
    "MachineVersion",
    "Notification",
    "NotifierState",
    "PullOrder",
    "Repository",
    "RevokedSession",
    "ServerSecret",
    "User",
    "Worker",
    "get_engine",
    "make_engine",
    "session_scope",
    "utcnow",
]


READ_ONLY = "freight_read_only"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Up to 40 at once: as many as the API's request threads (a request waiting 30 s for a
        # connection fails; a hundred agents reporting at once made 500s at 5 + 10). All kept
        # once opened: a pool of 5 that closed each extra connection as it came back made a
        # saturated API start 39 PostgreSQL backends a second. A process opens only as many
        # as it used at once.
        engine = create_engine(url, pool_pre_ping=True, pool_size=40, max_overflow=0)
        _short_write_transactions(engine)
        return engine
    connect_args = {"timeout": 30, "check_same_thread": False}
    if not parsed.database or parsed.database == ":memory:":
        # One connection for everyone: each new one would be a new, empty database.
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=connect_args)
    _sqlite_write_transactions(engine)
    return engine


def _sqlite_write_transactions(engine: Engine) -> None:
    """Make every SQLite transaction that may write take the write lock at BEGIN.

    With pysqlite's deferred BEGIN, a transaction that reads and then writes fails at once with
    "database is locked" when another writer got in between, instead of waiting its turn; the
    deploy numbering and the queue claim both read-then-write.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers need no write lock: in WAL mode they see the last commit and block nobody.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# How long a write transaction may sit between statements before the server ends its session.
# Freight's write transactions never wait on anything outside the database, so a longer pause
# means a frozen process (SIGSTOP, a paused VM, a host cut off by the network) that would
# otherwise hold its row locks (a deploy's row, a queue) for as long as it stays frozen, and
# with them the reconciler that must reap it.
WRITE_IDLE_LIMIT = "5s"


def _short_write_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not connection.get_execution_options().get(READ_ONLY, False):
            connection.exec_driver_sql(
                f"SET LOCAL idle_in_transaction_session_timeout = '{WRITE_IDLE_LIMIT}'"
            )


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine (and pool) per database URL in a process."""
    return make_engine(url)


@contextmanager
def session_scope(engine: Engine, *, read_only: bool = False) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error.

    `read_only` sessions must not write; on SQLite they then take no write lock, which matters
    when dozens of deploys poll their status while others write their logs.
    """
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    session = sessionmaker(bind, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
