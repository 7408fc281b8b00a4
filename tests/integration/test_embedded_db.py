"""The embedded PostgreSQL asks for a password even on loopback, where deploy commands run too;
a data directory made before that (which trusted every local user) is moved over on start."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from freight.embedded_db import EmbeddedDatabase
from tests.helpers import reachable_by_others, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database(tmp_path: Path) -> Iterator[EmbeddedDatabase]:
    home = reachable_by_others(tmp_path / "home")
    yield EmbeddedDatabase(home / "postgres", free_port(), home / "run" / "pgpass")


def connect(db: EmbeddedDatabase, **password: str) -> None:
    psycopg2.connect(
        host="127.0.0.1", port=db.port, user="postgres", dbname="postgres", **password
    ).close()


def serving(db: EmbeddedDatabase) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(db.command(), **db.identity(), stdout=subprocess.DEVNULL)
    wait_for(db.ready, 60, "the embedded PostgreSQL")
    return server


def test_an_old_trusting_data_directory_asks_for_the_password_from_its_next_start(
    database: EmbeddedDatabase,
) -> None:
    database.prepare()
    assert database.passfile.stat().st_mode & 0o077 == 0
    hba = database.data_dir / "pg_hba.conf"
    # As data directories were made before: every local connection trusted.
    hba.write_text(re.sub(r"scram-sha-256(\s*)$", r"trust\1", hba.read_text(), flags=re.M))
    server = serving(database)
    try:
        connect(database, passfile="/dev/null")  # trusted, as before
        assert database.require_password() is not None
        with pytest.raises(psycopg2.OperationalError, match="password"):
            connect(database, passfile="/dev/null")
        connect(database, password=database.password())
        connect(database, passfile=str(database.passfile))
        assert database.require_password() is None  # once is enough
    finally:
        server.terminate()
        server.wait(30)
    # The next start asks for it too, with the same password.
    server = serving(database)
    try:
        with pytest.raises(psycopg2.OperationalError, match="password"):
            connect(database, passfile="/dev/null")
        connect(database, passfile=str(database.passfile))
    finally:
        server.terminate()
        server.wait(30)
