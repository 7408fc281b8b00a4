"""Shared fixtures: databases (SQLite and PostgreSQL), settings, real git repositories, apps."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import Engine

from freight.db import make_engine
from freight.db.migrate import upgrade
from freight.service import barriers, locks
from freight.settings import Settings
from tests.factories import GitRepo
from tests.helpers import live_pids_with_env

PG_SERVER = os.environ.get("FREIGHT_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


def _pg_admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (or module), dropped afterwards."""
    try:
        admin = _pg_admin()
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"freight_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'freight.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        workspace_root=tmp_path / "workspaces",
        # Test repositories are made in tmp_path.
        allow_local_repositories=True,
        public_url="http://freight.test",
        api_key="s3cr3t-api-key",
        heartbeat_interval=0.5,
        queue_poll_interval=0.1,
        log_flush_interval=0.1,
        cancel_grace=1,
        notify_retry_delays=(0.05, 0.05),
    )


@pytest.fixture
def origin(tmp_path: Path) -> GitRepo:
    return GitRepo.create(tmp_path / "origin")


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique value for FREIGHT_PARAM_MARKER; whatever still carries it afterwards is killed,
    so a failing test leaves no process behind."""
    value = uuid.uuid4().hex
    yield value
    for pid in live_pids_with_env(f"FREIGHT_PARAM_MARKER={value}"):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Clock:
    """The time as Freight's release rules see it (windows, freezes), set by the test."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.astimezone(UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock for the rules that judge time (deploy windows, freezes), starting on
    Sunday 2026-12-06 at noon UTC. Everything else keeps the real time."""
    fake = Clock(datetime(2026, 12, 6, 12, tzinfo=UTC))
    for module in (barriers, locks):
        monkeypatch.setattr(module, "utcnow", fake)
    return fake
