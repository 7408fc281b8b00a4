"""The system users Freight runs things as when it is started by root: PostgreSQL, which
refuses to run as root, and deploy commands, which must not read Freight's secrets (the
environment of its processes, its files, other apps' secrets)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The user `freight up` makes for deploy commands when started by root.
DEPLOY_USER = "freight-run"


def ensure_user(name: str, purpose: str) -> str | None:
    """Make the system user (no home, no login shell) unless it exists; what was done, or None."""
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
    return f"made the system user {name} {purpose}"


def popen_identity(name: str) -> dict[str, Any]:
    """`subprocess` arguments that run a command as `name`, with its own group only (a process
    left in root's supplementary groups would keep their rights)."""
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass(frozen=True)
class RunAs:
    """The user deploy commands run as."""

    name: str
    uid: int
    gid: int

    def popen(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Make `path` and all below it this user's (a checkout, a temporary directory)."""
        chown_tree(path, self.uid, self.gid)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(top, name), uid, gid)


def unreachable(path: Path, name: str) -> Path | None:
    """The first directory above `path` that user `name` may not enter (as the kernel decides:
    the owner's bits, else the group's, else everyone else's), or None."""
    user = pwd.getpwnam(name)
    for parent in reversed(path.resolve().parents):
        found = parent.stat()
        if found.st_uid == user.pw_uid:
            enter = found.st_mode & stat.S_IXUSR
        elif found.st_gid == user.pw_gid:
            enter = found.st_mode & stat.S_IXGRP
        else:
            enter = found.st_mode & stat.S_IXOTH
        if not enter:
            return parent
    return None


def run_as(name: str | None) -> RunAs | None:
    """Whom deploy commands run as: `name`, if it exists and this process may switch to it;
    None when they run as Freight's own user (see `exposed`)."""
    if not name or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def exposed(name: str | None) -> str | None:
    """Why deploy commands would run with Freight's own rights (and so could read its
    secrets), to say loudly; None when they run as a user of their own."""
    if run_as(name) is not None:
        return None
    me = pwd.getpwuid(os.geteuid()).pw_name
    if not name:
        return (
            f"deploy commands run as {me}, Freight's own user, and can read its secrets: "
            "set FREIGHT_RUN_AS to an unprivileged user (freight up does, started by root)"
        )
    if os.geteuid() != 0:
        return (
            f"FREIGHT_RUN_AS={name}, but Freight runs as {me} and cannot switch users: deploy "
            f"commands run as {me} and can read Freight's secrets"
        )
    return (
        f"FREIGHT_RUN_AS={name} is not a user of this machine (or is root): deploy commands "
        f"run as {me} and can read Freight's secrets"
    )
